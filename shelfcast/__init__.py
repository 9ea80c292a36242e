"""shelfcast package."""
