"""PickScore as its README computes it (yuvalkirstain/PickScore, on the transformers 4 it was written for), for
tests/test_pickscore.py. Run by tests/reference_env.py with the reference env first on the path::

    python tests/pickscore_reference.py WEIGHTS_FOLDER REQUEST.json   ->  JSON list of scores on stdout

REQUEST.json is ``{"images": [png paths], "prompts": [...]}``; each prompt is scored against its own image.
"""

import json
import sys
from pathlib import Path


def main(weights: Path, request: Path) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(weights / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    model = AutoModel.from_pretrained(weights / "PickScore_v1").eval()
    job = json.loads(request.read_text())
    scores = []
    with torch.no_grad():
        for path, prompt in zip(job["images"], job["prompts"]):
            image_inputs = processor(images=[Image.open(path)], padding=True, truncation=True, max_length=77,
                                     return_tensors="pt")
            text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores.append(float((model.logit_scale.exp() * (text_embs @ image_embs.T))[0, 0]))
    print(json.dumps(scores))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
