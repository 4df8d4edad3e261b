"""Small pieces every stage shares: errors, devices, files, URLs, label values, progress, config fields."""
