"""Hydrosphere's example tokenizer: splits each input text into lowercase word tokens.

The signature `tokenize` of serving.yaml names this function; the runtime calls it with the
request's fields and returns what it gives back.
"""

import re

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(input_text):
    """input_text: a [-1, 1] batch of strings -> output_text: the same batch, tokens joined by spaces."""
    rows = input_text if isinstance(input_text, (list, tuple)) else [input_text]
    output = []
    for row in rows:
        text = row[0] if isinstance(row, (list, tuple)) else row
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        output.append([" ".join(token.lower() for token in _WORD.findall(text))])
    return {"output_text": output}


if __name__ == "__main__":
    print(tokenize([["Hello, World! ML Lambda"]]))
