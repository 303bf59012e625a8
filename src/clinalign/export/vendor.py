"""The record rules of the vendors' fine-tuning upload files, as pydantic models.

A vendor rejects a bad file only after the upload, sometimes after a job has queued; these models
reject it here, with ``FILE:LINE: field: problem``. Each rule is one the vendor documents (see
docs/export.md for the pages relied on); nothing else is enforced, so a valid file is not refused.

- OpenAI / Azure OpenAI DPO: ``input.messages``, then ``preferred_output`` and
  ``non_preferred_output``, each a list of assistant/tool messages with at least one assistant one.
- OpenAI / Azure OpenAI SFT: ``messages`` (system/user/assistant/tool), at least one assistant
  message; an assistant message may carry ``weight`` 0 or 1.
- Vertex AI Gemini preference tuning: ``contents`` ending with a user turn, ``completions`` of
  exactly two ``{score, completion}`` with one score 1 and one score 0, each completion a single
  ``model`` turn; optional ``system_instruction``; input plus output within 131,072 tokens.
- Vertex AI Gemini SFT: ``contents`` of user/model turns starting with user and ending with model;
  optional ``systemInstruction``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

#: Vertex AI: "Maximum input and output tokens per training example: 131,072" (preference tuning)
VERTEX_MAX_TOKENS = 131_072
#: Gemini tokens cannot be counted offline; Google's rule of thumb is about 4 characters per token
CHARS_PER_TOKEN = 4


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- OpenAI / Azure OpenAI -------------------------------------------------------------------------


class ChatMessage(_Record):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(default=None, min_length=1)
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("a message needs content (or tool_calls)")
        return self


class SftMessage(ChatMessage):
    #: 0 = do not train on this assistant message (multi-turn data)
    weight: StrictInt | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _weight_on_assistant(self) -> SftMessage:
        if self.weight is not None and self.role != "assistant":
            raise ValueError("weight is only allowed on assistant messages")
        return self


class OutputMessage(ChatMessage):
    role: Literal["assistant", "tool"]


class DpoInput(_Record):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None


class OpenAIDpoRecord(_Record):
    """One preference example for OpenAI's and Azure OpenAI's DPO (``method: {type: dpo}``)."""

    input: DpoInput
    preferred_output: list[OutputMessage] = Field(min_length=1)
    non_preferred_output: list[OutputMessage] = Field(min_length=1)

    @field_validator("preferred_output", "non_preferred_output")
    @classmethod
    def _one_assistant(cls, messages: list[OutputMessage]) -> list[OutputMessage]:
        if not any(m.role == "assistant" for m in messages):
            raise ValueError("needs at least one assistant message")
        return messages

    @model_validator(mode="after")
    def _differ(self) -> OpenAIDpoRecord:
        if self.preferred_output == self.non_preferred_output:
            raise ValueError("preferred_output and non_preferred_output are identical: nothing to learn")
        return self


class OpenAISftRecord(_Record):
    """One chat example for OpenAI's and Azure OpenAI's supervised fine-tuning."""

    messages: list[SftMessage] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _assistant(cls, messages: list[SftMessage]) -> list[SftMessage]:
        if not any(m.role == "assistant" for m in messages):
            raise ValueError("needs at least one assistant message (the training target)")
        return messages


# --- Vertex AI Gemini ------------------------------------------------------------------------------


class Part(_Record):
    text: str = Field(min_length=1)


class Content(_Record):
    role: Literal["user", "model"]
    parts: list[Part] = Field(min_length=1)


class ModelContent(Content):
    role: Literal["model"]


class SystemInstruction(_Record):
    role: str | None = None  # documented as ignored
    parts: list[Part] = Field(min_length=1)


class Completion(_Record):
    score: StrictInt = Field(ge=0, le=1)  # strict: true is not 1
    completion: ModelContent


def _check_tokens(*contents: Content | SystemInstruction | None) -> None:
    chars = sum(len(p.text) for c in contents if c is not None for p in c.parts)
    tokens = math.ceil(chars / CHARS_PER_TOKEN)
    if tokens > VERTEX_MAX_TOKENS:
        raise ValueError(f"about {tokens:,} tokens (~{CHARS_PER_TOKEN} characters per token): over "
                         f"Vertex AI's {VERTEX_MAX_TOKENS:,} input + output tokens per example")


class VertexPreferenceRecord(_Record):
    """One example for Vertex AI Gemini preference tuning."""

    system_instruction: SystemInstruction | None = None
    contents: list[Content] = Field(min_length=1)
    completions: list[Completion] = Field(min_length=2, max_length=2)

    @field_validator("contents")
    @classmethod
    def _ends_with_user(cls, contents: list[Content]) -> list[Content]:
        if contents[-1].role != "user":
            raise ValueError("must end with a user turn")
        return contents

    @field_validator("completions")
    @classmethod
    def _scores(cls, completions: list[Completion]) -> list[Completion]:
        if sorted(c.score for c in completions) != [0, 1]:
            raise ValueError("needs one preferred (score 1) and one dispreferred (score 0) completion")
        return completions

    @model_validator(mode="after")
    def _tokens(self) -> VertexPreferenceRecord:
        longest = max(self.completions, key=lambda c: sum(len(p.text) for p in c.completion.parts))
        _check_tokens(self.system_instruction, *self.contents, longest.completion)
        return self


class VertexSftRecord(_Record):
    """One example for Vertex AI Gemini supervised fine-tuning."""

    systemInstruction: SystemInstruction | None = None  # the vendor's spelling (camelCase here)
    contents: list[Content] = Field(min_length=1)

    @field_validator("contents")
    @classmethod
    def _turns(cls, contents: list[Content]) -> list[Content]:
        if contents[0].role != "user":
            raise ValueError("must start with a user turn")
        if contents[-1].role != "model":
            raise ValueError("must end with a model turn (the training target)")
        return contents

    @model_validator(mode="after")
    def _tokens(self) -> VertexSftRecord:
        _check_tokens(self.systemInstruction, *self.contents)
        return self
