"""`make demo`: train a small real model, optimize it, serve the winner."""
