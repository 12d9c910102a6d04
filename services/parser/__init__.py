"""Parser: turns an accepted file's bytes into normalised call records, rejecting bad rows with reasons."""
