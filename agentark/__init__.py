"""AgentArk: distil a multi-agent LLM system into one fine-tuned model.

Data flows one way: tasks -> mas (run by engines) -> traces -> distill -> evaluate -> gate/report.
"""

__version__ = "0.1.0"
