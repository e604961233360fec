"""Who the citizens are: demographic templates, public-data presets, and citizens made from them."""
