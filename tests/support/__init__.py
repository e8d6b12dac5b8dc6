"""Test support: the OpenAI-compatible fault-injecting test server (`python -m tests.support.fake_openai`), an
S3-compatible server on 127.0.0.1 (s3_server.py, moto's server mode), and a judge and teacher that wait at a
gate (gate.py).
"""
