"""mpbot: a WeChat Official Account bot that answers with an LLM inside WeChat's passive-reply rules."""
