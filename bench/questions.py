"""What the sampling benchmarks share: short everyday questions for a small chat model, and options."""

import os

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Write a haiku about the sea.",
    "What is 12 times 12?", "Explain photosynthesis in one sentence.", "Who wrote Hamlet?",
    "Give me a synonym for happy.", "What is the boiling point of water?", "List two fruits that are red.",
    "What does CPU stand for?", "Translate 'hello' into Spanish.", "What is the largest planet?",
    "How many legs does a spider have?", "Suggest a name for a cat.", "What color is the sky on a clear day?",
    "Why do leaves change color in autumn?", "What is a prime number?", "Describe a rainbow briefly.",
    "How do bees make honey?", "What is the speed of light?",
]


def add_sampling_args(p) -> None:
    """The options both sampling benchmarks take (model folder, workload size, CPU threads)."""
    p.add_argument("--model", default=os.environ.get("DNO_SMOLLM2_DIR", "models/smollm2-135m-instruct"))
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
