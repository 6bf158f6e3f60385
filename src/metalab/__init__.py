"""metalab: few-shot learning by meta-learning."""

__version__ = "0.1.0"
