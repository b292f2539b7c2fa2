"""Ingest: flows from CIC-IDS2018 CSVs, nfdump files, pcaps and live exporters into `spot.flow`."""
