"""LangChain building blocks, by family: ``llm`` (the local model), ``retrieval`` (embeddings, the
index, the retriever, the gate) and ``prompting`` (prompts, instruction reading, code extraction,
the codegen and repair chains)."""
