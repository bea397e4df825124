"""What every job shares: the settings loader, storage, errors, model sources and the weights policy."""
