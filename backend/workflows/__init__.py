"""The workflows: pre-labeling, re-scoring, the training run, the project sync, and the
rule for when pre-labeling is due. They orchestrate the adapters (Label Studio, the LLM,
the models) and the predictor; backend/jobs/ runs them in the background."""
