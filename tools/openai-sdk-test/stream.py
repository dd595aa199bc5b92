"""Streams and non-streams an answer from gar serve through the OpenAI SDK; checks they agree."""
import base64
import sys

from openai import OpenAI

url, image_path, mask_path = sys.argv[1:4]
client = OpenAI(base_url=url + "/v1", api_key="unused")
image = "data:image/png;base64," + base64.b64encode(open(image_path, "rb").read()).decode()
mask = base64.b64encode(open(mask_path, "rb").read()).decode()
messages = [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": image}},
    {"type": "text", "text": "Describe this masked region in detail."},
]}]
extra = {"regions": [{"mask": mask}]}

pieces = []
finish = None
stream = client.chat.completions.create(
    model="gar", messages=messages, max_tokens=24, stream=True, extra_body=extra)
for chunk in stream:
    assert chunk.object == "chat.completion.chunk", chunk
    choice = chunk.choices[0]
    if choice.delta.content:
        pieces.append(choice.delta.content)
    finish = choice.finish_reason or finish
streamed = "".join(pieces)

full = client.chat.completions.create(
    model="gar", messages=messages, max_tokens=24, extra_body=extra)
text = full.choices[0].message.content
models = [m.id for m in client.models.list()]

print(f"models: {models}")
print(f"streamed {len(pieces)} pieces, finish_reason={finish}: {streamed!r}")
assert len(pieces) > 1, "the answer should arrive in several chunks"
assert streamed == text, (streamed, text)
assert finish == "length" and full.usage.completion_tokens == 24, (finish, full.usage)
print("OK: the OpenAI SDK streamed the same answer as the non-streaming call")
