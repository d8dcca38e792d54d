"""Dataset sources: each turns its input into items and items into records (pure, picklable)."""
