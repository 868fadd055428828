"""A Flower App whose participation, downloads and service rates come from jointopt."""
