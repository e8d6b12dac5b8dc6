"""The prompts the sampling benchmarks share: short everyday questions for a small chat model."""

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Write a haiku about the sea.",
    "What is 12 times 12?", "Explain photosynthesis in one sentence.", "Who wrote Hamlet?",
    "Give me a synonym for happy.", "What is the boiling point of water?", "List two fruits that are red.",
    "What does CPU stand for?", "Translate 'hello' into Spanish.", "What is the largest planet?",
    "How many legs does a spider have?", "Suggest a name for a cat.", "What color is the sky on a clear day?",
    "Why do leaves change color in autumn?", "What is a prime number?", "Describe a rainbow briefly.",
    "How do bees make honey?", "What is the speed of light?",
]
