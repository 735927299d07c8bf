"""Post-training data: seeds mined from the curated corpus, synthetic instruction samples from a
teacher model, and their execution verification in the sandbox."""
