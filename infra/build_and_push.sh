#!/usr/bin/env bash
# Build the cluster image (infra/Dockerfile) and push it to Amazon ECR; prints the image URI for ray_cluster.yaml.
#
#   AWS_ACCOUNT_ID=123456789012 infra/build_and_push.sh
#
# Environment:
#   AWS_ACCOUNT_ID   required: the 12-digit account that owns the ECR repository
#   AWS_REGION       default us-east-1 (keep it the cluster's region)
#   ECR_REPOSITORY   default tryall
#   IMAGE_TAG        default: the commit, e.g. git-3f2c1a9b0d4e; a checkout with uncommitted changes to what goes
#                    into the image is refused unless ALLOW_DIRTY=1 (the tag then gets a -dirty-<time> suffix)
#   DRY_RUN=1        print the docker/aws commands instead of running them
#
# AWS credentials come from the standard chain of whoever runs this (profile, SSO, environment); none are read or
# written here. The repository is created on first use, with immutable tags and scan on push.
set -euo pipefail

cd "$(dirname "$0")/.."

: "${AWS_ACCOUNT_ID:?set AWS_ACCOUNT_ID to the 12-digit AWS account that owns the ECR repository}"
if [[ ! "$AWS_ACCOUNT_ID" =~ ^[0-9]{12}$ ]]; then
    echo "AWS_ACCOUNT_ID must be 12 digits, got '$AWS_ACCOUNT_ID'" >&2
    exit 2
fi
AWS_REGION="${AWS_REGION:-us-east-1}"
ECR_REPOSITORY="${ECR_REPOSITORY:-tryall}"

# Everything that goes into the image (see infra/Dockerfile).
IMAGE_INPUTS=(infra/Dockerfile infra/Dockerfile.dockerignore infra/requirements-cluster.txt
    pyproject.toml requirements.lock README.md pipeline jobs)

if [[ -z "${IMAGE_TAG:-}" ]]; then
    IMAGE_TAG="git-$(git rev-parse --short=12 HEAD)"
    if [[ -n "$(git status --porcelain -- "${IMAGE_INPUTS[@]}")" ]]; then
        if [[ "${ALLOW_DIRTY:-}" != "1" ]]; then
            echo "uncommitted changes in the image's inputs; commit them, or set ALLOW_DIRTY=1 or IMAGE_TAG" >&2
            git status --short -- "${IMAGE_INPUTS[@]}" >&2
            exit 2
        fi
        IMAGE_TAG="${IMAGE_TAG}-dirty-$(date -u +%Y%m%dT%H%M%SZ)"
    fi
fi

REGISTRY="${AWS_ACCOUNT_ID}.dkr.ecr.${AWS_REGION}.amazonaws.com"
IMAGE="${REGISTRY}/${ECR_REPOSITORY}:${IMAGE_TAG}"

run() {
    if [[ "${DRY_RUN:-}" == "1" ]]; then
        echo "+ $*"
    else
        "$@"
    fi
}

ecr_login() {
    if [[ "${DRY_RUN:-}" == "1" ]]; then
        echo "+ aws ecr get-login-password --region $AWS_REGION | docker login --username AWS --password-stdin $REGISTRY"
    else
        aws ecr get-login-password --region "$AWS_REGION" \
            | docker login --username AWS --password-stdin "$REGISTRY"
    fi
}

ensure_repository() {
    if [[ "${DRY_RUN:-}" == "1" ]]; then
        echo "+ aws ecr describe-repositories --region $AWS_REGION --repository-names $ECR_REPOSITORY" \
            "|| aws ecr create-repository ... --image-tag-mutability IMMUTABLE"
    elif ! aws ecr describe-repositories --region "$AWS_REGION" --repository-names "$ECR_REPOSITORY" >/dev/null 2>&1; then
        echo "creating ECR repository $ECR_REPOSITORY in $AWS_REGION" >&2
        aws ecr create-repository --region "$AWS_REGION" --repository-name "$ECR_REPOSITORY" \
            --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true >/dev/null
    fi
}

tag_exists() {
    [[ "${DRY_RUN:-}" != "1" ]] && aws ecr describe-images --region "$AWS_REGION" --repository-name "$ECR_REPOSITORY" \
        --image-ids "imageTag=$IMAGE_TAG" >/dev/null 2>&1
}

ensure_repository
if tag_exists; then
    # Tags are immutable: this commit's image is already there.
    echo "already pushed: $IMAGE" >&2
    echo "$IMAGE"
    exit 0
fi

# The cluster's nodes are x86_64; --platform keeps a build on an arm64 laptop correct.
run docker build --platform linux/amd64 --file infra/Dockerfile --tag "$IMAGE" .
ecr_login
run docker push "$IMAGE"

[[ "${DRY_RUN:-}" == "1" ]] || echo "pushed $IMAGE; put it in ray_cluster.yaml under docker.image" >&2
echo "$IMAGE"
