"""Post-training data: seeds mined from the curated corpus, synthetic instruction samples from a teacher model, execution verification in the sandbox."""
