"""Text above the engine: DeepSeek-V4's chat format and its DSML tool calls.

    prompt = encode_messages(messages, thinking=True)       # -> text; tokenize it for the engine
    parser = OutputParser(thinking=True, tools=True)        # model output -> reasoning, content, calls
"""

from .dsml import Delta, OutputParser, ToolCall, parse_output, render_tool_calls, render_tools
from .encoding import BOS, EOS, SPECIAL_TOKENS, encode_messages

__all__ = [
    "BOS", "EOS", "SPECIAL_TOKENS", "Delta", "OutputParser", "ToolCall", "encode_messages", "parse_output",
    "render_tool_calls", "render_tools",
]
