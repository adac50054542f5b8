"""A/B experiments: definition, assignment, serving, attribution in the stream, report."""
