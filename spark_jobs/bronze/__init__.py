"""Bronze: raw CSV lines to Delta, every source column kept as text, bad records quarantined."""
