"""Reports for the people who decide about the pilot."""
