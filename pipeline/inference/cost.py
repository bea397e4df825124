"""What images cost in GPU time: seconds of GPU per image and dollars per 1000 images at a price per GPU hour.

One place for the projection, so a run's summary.json and `benchmarks` state it the same way.
"""

from __future__ import annotations

# AWS g5.xlarge (one A10G) on-demand in us-east-1: the cluster's GPU node and the default price of a GPU hour.
G5_XLARGE_ON_DEMAND_USD_PER_HOUR = 1.006
PRICE_NOTE = "g5.xlarge on-demand, us-east-1"


def cost_projection(gpu_s: float, images: int, gpu_hourly_usd: float, *, basis: str) -> dict:
    """GPU seconds per image and USD per 1000 images; None when no image was made. `basis` says what was timed."""
    per_image = gpu_s / images if images > 0 else None
    return {
        "gpu_s_per_image": None if per_image is None else round(per_image, 4),
        "usd_per_1000_images": None if per_image is None else round(per_image * 1000 * gpu_hourly_usd / 3600, 4),
        "gpu_hourly_usd": gpu_hourly_usd,
        "price": PRICE_NOTE if gpu_hourly_usd == G5_XLARGE_ON_DEMAND_USD_PER_HOUR else "cost.gpu_hourly_usd",
        "images": images,
        "basis": basis,
    }


def format_projection(projection: dict) -> str:
    """One line for logs and the bench's table."""
    if projection["gpu_s_per_image"] is None:
        return "cost: no images, no projection"
    return (f"cost: {projection['gpu_s_per_image']:.3f} GPU s/image -> ${projection['usd_per_1000_images']:.2f} per "
            f"1000 images at ${projection['gpu_hourly_usd']:.3f}/GPU-hour ({projection['price']}; "
            f"{projection['basis']})")
