"""The curve tables the replay and the search benchmarks read: `curves.py` records them (real
RRA training runs), writes them as one Parquet file with their provenance, shows, checks and
draws them."""
