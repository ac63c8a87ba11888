"""The LALM judge: yes/no probabilities (AQAScore) and a fine-grained rubric, in one package.

- ``base``: the ``JudgeScorer`` contract, question templates, reading answers into scores;
- ``hf``: transformers backends (Qwen2-Audio, Qwen2.5-Omni) and the shipped judge-mini;
- ``http``: an OpenAI-compatible server (vLLM ``input_audio`` parts, ``logprobs``);
- ``server``: ``ttaeval judge serve``, that API in front of a transformers judge;
- ``faults``: fault injection for testing clients against a misbehaving server.
"""
