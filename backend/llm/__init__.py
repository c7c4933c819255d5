"""The zero-shot LLM: prompt, labeler, answer cache, embedded local server."""
