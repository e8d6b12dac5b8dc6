"""Test support: the OpenAI-compatible fault-injecting test server (`python -m tests.support.fake_openai`)."""
