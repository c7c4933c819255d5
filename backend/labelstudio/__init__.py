"""Label Studio through label-studio-sdk: tasks, predictions, views, webhooks."""
