"""Silver: typed, cleaned, de-duplicated current state of each source, with expectations."""
