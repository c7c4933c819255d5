"""Test doubles, kept together and imported from here by tests and benchmarks.

- :mod:`tests.doubles.label_studio`: ``FakeLabelStudio``, an in-process Label Studio that
  answers the label-studio-sdk calls the backend makes, from memory;
- :mod:`tests.doubles.llm_endpoint`: ``MisbehavingLLM``, an OpenAI-compatible HTTP
  endpoint that fails on purpose (garbage answers, HTTP 500, slow replies).
"""
