"""Write the bundled workflows: ``workflows/<stem>.json`` (UI format, what drag-and-drop and the
template browser load), ``workflows/<stem>.jpg`` (thumbnail) and ``workflows/api/<stem>.json``
(API format, what ``POST /prompt`` takes, equal to the frontend's ``graphToPrompt()``).

    python scripts/build_workflows.py            # rewrite them all (and remove ones no longer built)
    python scripts/build_workflows.py --check    # exit 1 if a file differs from what would be written
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_tools import REPO, link_inputs, node_spec, ui_to_api, widget_layout  # noqa: E402

OUT = REPO / "workflows"
MODEL = "zeroscope_v2_576w"


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def add(self, class_type, values=None, links=None, pos=(0, 0), title=None):
        spec = node_spec(class_type)
        assert spec, class_type
        values = dict(values or {})
        widgets = []
        for name, entry, control in widget_layout(spec):
            if control:
                widgets.append(control)
                continue
            if name in values:
                widgets.append(values.pop(name))
            else:
                opts = entry[1] if len(entry) > 1 else {}
                widgets.append(opts.get("default", entry[0][0] if isinstance(entry[0], list) else None))
        assert not values, f"{class_type}: unknown widgets {values}"
        nid = len(self.nodes) + 1
        inputs = [{"name": n, "type": t, "link": None} for n, t, _ in link_inputs(spec)]
        outputs = [
            {"name": n, "type": t, "links": [], "slot_index": i}
            for i, (n, t) in enumerate(zip(spec["output_names"], spec["output"]))
        ]
        n_rows = max(len(inputs), len(outputs)) + len(widgets)
        node = {
            "id": nid,
            "type": class_type,
            "pos": list(pos),
            "size": [330, 46 + 24 * n_rows],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {"Node name for S&R": class_type},
            "widgets_values": widgets,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        for name, (src, slot) in (links or {}).items():
            self.link(src, slot, nid, name)
        return nid

    def link(self, src, slot, dst, name):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        lid = len(self.links) + 1
        index = [i["name"] for i in d["inputs"]].index(name)
        ltype = s["outputs"][slot]["type"]
        assert d["inputs"][index]["type"] == ltype, (s["type"], slot, d["type"], name)
        d["inputs"][index]["link"] = lid
        s["outputs"][slot]["links"].append(lid)
        self.links.append([lid, src, slot, dst, index, ltype])

    def ui(self):
        # execution order: a topological order of the nodes
        deps = {n["id"]: {lk[1] for lk in self.links if lk[3] == n["id"]} for n in self.nodes}
        order, done = [], set()
        while len(order) < len(self.nodes):
            for nid in sorted(deps):
                if nid not in done and deps[nid] <= done:
                    order.append(nid)
                    done.add(nid)
        for n in self.nodes:
            n["order"] = order.index(n["id"])
            for o in n["outputs"]:
                o["links"] = o["links"] or None
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}},
            "version": 0.4,
        }


def col(i, row=0):
    return (40 + 380 * i, 40 + row)


# The quick start: the built-in ShapesWorld model at the size it was trained for (its videomage.json:
# 8 frames of 64x64 px, CFG 3, SCS alpha 10), with small but real step counts, so it runs in minutes on a CPU.
BUILTIN = "shapesworld_builtin"
QUICK = {
    "size": {"width": 32, "height": 32},
    "frames": 8,
    "subject": {"steps": 60, "lr_lora": 1e-3, "prior_videos": 2, "prior_frames": 8, "prior_steps": 10},
    "motion": {"steps": 60, "inversion_steps": 30, "lr_lora": 1e-3},
    "fusion": {
        "steps": 40,
        "lr_lora": 1e-3,
        "frames": 8,
        "generation_steps": 10,
        "videos_per_subject": 1,
        "cutmix_videos": 2,
    },
    "sampler": {"frames": 8, "steps": 20, "cfg": 3.0, "tau": 6, "alpha": 10.0},  # its scs_alpha (1e4 saturates it)
}
PROMPT = "a <red_star> chases a <green_ring>"  # the quick start's


# The workflows for real models start from the user's files through core nodes: photos through Load
# Image (a cut-out PNG's transparency is the subject mask) batched by Subject Images, the reference clip
# through Load Video + Get Video Components. The file names are the ones the README asks for; a user
# picks their own in each loader. The paper's example: two subjects and a riding motion.
REAL_SUBJECTS = (("<my_toy>", "toy"), ("<my_dog>", "dog"))
PHOTOS_PER_SUBJECT = 3
REFERENCE_VIDEO = "riding_reference.mp4"
REAL_MOTION = {"motion_prompt": "a person riding a horse", "reference_words": "person, horse"}
REAL_PROMPT = "a <my_toy> riding a <my_dog>"


def photo_files(token: str) -> list[str]:
    """``<my_toy>`` -> my_toy_1.png, my_toy_2.png, my_toy_3.png."""
    return [f"{token.strip('<>')}_{i}.png" for i in range(1, PHOTOS_PER_SUBJECT + 1)]


def user_photos(g, row, token):
    """Load Image x 3 -> Subject Images: the batch and masks Train Subject takes."""
    loaders = [
        g.add("LoadImage", {"image": name}, pos=(40, 40 + row + 175 * i), title=f"{token} photo {i + 1}")
        for i, name in enumerate(photo_files(token))
    ]
    links = {f"image_{i + 1}": (n, 0) for i, n in enumerate(loaders)}
    links.update({f"mask_{i + 1}": (n, 1) for i, n in enumerate(loaders)})
    return g.add("VideoMageSubjectImages", links=links, pos=(420, 40 + row))


def subject_branch(g, model, row, quick, index):
    """Train Subject from ShapesWorld's example subject (quick start) or from the user's photos."""
    if quick:
        # plain: the second edition's VAE does not resolve textures, so they are not part of an identity
        shape, colour, texture, token = (("star", "red", "plain", "<red_star>"),
                                         ("ring", "green", "plain", "<green_ring>"))[index]
        s = g.add(
            "VideoMageShapesWorldSubject",
            {"shape": shape, "colour": colour, "texture": texture, "count": 4, "seed": index, **QUICK["size"]},
            pos=col(0, row),
        )
        # ShapesWorld captions call a star or a ring "shape" (the built-in model's superclass word)
        values = {"token": token, "superclass": "shape", "seed": index, **QUICK["size"], **QUICK["subject"]}
    else:
        token, superclass = REAL_SUBJECTS[index]
        s = user_photos(g, row, token)
        values = {"token": token, "superclass": superclass, "seed": index}
    return g.add(
        "VideoMageTrainSubject",
        values,
        links={"model": (model, 0), "images": (s, 0), "masks": (s, 1)},
        pos=col(2 if not quick else 1, row),
    )


def motion_branch(g, model, row, quick):
    """Train Motion from ShapesWorld's example clip (quick start) or from the user's reference video."""
    if quick:
        v = g.add(
            "VideoMageShapesWorldMotion",
            {
                "interaction": "chase",
                "shape_a": "circle",
                "colour_a": "blue",
                "shape_b": "square",
                "colour_b": "yellow",
                "frames": QUICK["frames"],
                **QUICK["size"],
            },
            pos=col(0, row),
        )
        values = {"motion_prompt": "a circle chases a square", "reference_words": "circle, square",
                  **QUICK["size"], **QUICK["motion"]}
        links = {"model": (model, 0), "video": (v, 0), "masks": (v, 1)}
    else:
        f = g.add("LoadVideo", {"file": REFERENCE_VIDEO}, pos=col(0, row), title="reference video")
        v = g.add("GetVideoComponents", links={"video": (f, 0)}, pos=(420, 40 + row))
        values = dict(REAL_MOTION)
        links = {"model": (model, 0), "video": (v, 0)}  # optional masks: one per reference word
    return g.add("VideoMageTrainMotion", values, links=links, pos=col(2 if not quick else 1, row))


def full_pipeline(quick=False):
    g = Graph()
    size = QUICK["size"] if quick else {}
    right = 2 if quick else 3
    m = g.add("VideoMageLoadModel", {"model_name": BUILTIN if quick else MODEL}, pos=col(0, -200))
    a = subject_branch(g, m, 0, quick, 0)
    b = subject_branch(g, m, 560, quick, 1)
    mo = motion_branch(g, m, 1120, quick)
    f = g.add(
        "VideoMageFuseSubjects",
        {**size, **(QUICK["fusion"] if quick else {})},
        links={"model": (m, 0), "subject_1": (a, 0), "subject_2": (b, 0)},
        pos=col(right, 0),
    )
    g.add("PreviewImage", links={"images": (f, 2)}, pos=col(right + 1, 0), title="CutMix preview")
    s = g.add(
        "VideoMageCollaborativeSampler",
        {"prompt": PROMPT if quick else REAL_PROMPT, **size, **(QUICK["sampler"] if quick else {})},
        links={"model": (m, 0), "subject": (f, 0), "motion": (mo, 0)},
        pos=col(right, 640),
    )
    g.add(
        "SaveAnimatedWEBP",
        {"filename_prefix": "videomage/quick_start" if quick else "videomage/full_pipeline", "fps": 8.0},
        links={"images": (s, 0)},
        pos=col(right + 1, 640),
    )
    return g


def train_subject():
    g = Graph()
    m = g.add("VideoMageLoadModel", {"model_name": MODEL}, pos=col(0, -200))
    t = subject_branch(g, m, 0, False, 0)
    g.add(
        "VideoMageSaveSubject",
        {"filename_prefix": "my_subjects/my_toy"},
        links={"subject": (t, 0)},
        pos=col(3, 0),
    )
    return g


def train_motion():
    g = Graph()
    m = g.add("VideoMageLoadModel", {"model_name": MODEL}, pos=col(0, -200))
    t = motion_branch(g, m, 0, False)
    g.add(
        "VideoMageSaveMotion",
        {"filename_prefix": "my_motions/riding"},
        links={"motion": (t, 0)},
        pos=col(3, 0),
    )
    return g


SAVED_SUBJECT = "videomage/fused_my_toy+my_dog_00001_.safetensors"
SAVED_MOTION = "videomage/motion_person-horse_00001_.safetensors"


def _loaders(g):
    m = g.add("VideoMageLoadModel", {"model_name": MODEL}, pos=col(0, 0))
    s = g.add(
        "VideoMageLoadSubject", {"subject_file": SAVED_SUBJECT}, links={"model": (m, 0)}, pos=col(0, 220)
    )
    mo = g.add("VideoMageLoadMotion", {"motion_file": SAVED_MOTION}, links={"model": (m, 0)}, pos=col(0, 440))
    return m, s, mo


def sample_saved():
    g = Graph()
    m, s, mo = _loaders(g)
    x = g.add(
        "VideoMageCollaborativeSampler",
        {"prompt": REAL_PROMPT},
        links={"model": (m, 0), "subject": (s, 0), "motion": (mo, 0)},
        pos=col(1, 0),
    )
    g.add(
        "SaveAnimatedWEBP",
        {"filename_prefix": "videomage/sample", "fps": 8.0},
        links={"images": (x, 0)},
        pos=col(2, 0),
    )
    return g


def scs_vs_wo_scs():
    g = Graph()
    m, s, mo = _loaders(g)
    a = g.add(
        "VideoMageCollaborativeSampler",
        {"prompt": REAL_PROMPT, "mode": "SCS"},
        links={"model": (m, 0), "subject": (s, 0), "motion": (mo, 0)},
        pos=col(1, 0),
        title="SCS",
    )
    b = g.add(
        "VideoMageCollaborativeSampler",
        {"prompt": REAL_PROMPT, "mode": "w/o SCS"},
        links={"model": (m, 0), "subject": (s, 0), "motion": (mo, 0)},
        pos=col(1, 600),
        title="w/o SCS",
    )
    st = g.add(
        "ImageStitch",
        {"spacing_width": 8, "spacing_color": "black"},
        links={"image1": (a, 0), "image2": (b, 0)},
        pos=col(2, 0),
    )
    g.add(
        "SaveAnimatedWEBP",
        {"filename_prefix": "videomage/scs_vs_wo_scs", "fps": 8.0},
        links={"images": (st, 0)},
        pos=col(3, 0),
    )
    return g


# AnimateDiff from the user's own files (what ComfyUI's default SD1.5 download and AnimateDiff-Evolved's
# motion module are called), at AnimateDiff's usual 16 frames of 512 x 512, 25 steps, CFG 7.5.
AD_CHECKPOINT, AD_MOTION_MODULE = "v1-5-pruned-emaonly.safetensors", "mm_sd_v15_v2.ckpt"
AD_SIZE = {"width": 512, "height": 512}


def animatediff_full_pipeline():
    """The full pipeline on AnimateDiff, then the fused subject and the motion exported for other graphs."""
    g = Graph()
    m = g.add("VideoMageLoadAnimateDiff", {"ckpt_name": AD_CHECKPOINT, "motion_module": AD_MOTION_MODULE},
              pos=col(0, -200))
    subjects = []
    for index, row in ((0, 0), (1, 560)):
        token, superclass = REAL_SUBJECTS[index]
        s = user_photos(g, row, token)
        subjects.append(g.add("VideoMageTrainSubject", {"token": token, "superclass": superclass, "seed": index,
                                                        **AD_SIZE},
                              links={"model": (m, 0), "images": (s, 0), "masks": (s, 1)}, pos=col(2, row)))
    f = g.add("LoadVideo", {"file": REFERENCE_VIDEO}, pos=col(0, 1120), title="reference video")
    v = g.add("GetVideoComponents", links={"video": (f, 0)}, pos=(420, 1160))
    mo = g.add("VideoMageTrainMotion", {**REAL_MOTION, **AD_SIZE, "frames": 16},
               links={"model": (m, 0), "video": (v, 0)}, pos=col(2, 1120))
    fu = g.add("VideoMageFuseSubjects", dict(AD_SIZE),
               links={"model": (m, 0), "subject_1": (subjects[0], 0), "subject_2": (subjects[1], 0)}, pos=col(3, 0))
    s = g.add("VideoMageCollaborativeSampler",
              {"prompt": REAL_PROMPT, **AD_SIZE, "frames": 16, "steps": 25, "cfg": 7.5},
              links={"model": (m, 0), "subject": (fu, 0), "motion": (mo, 0)}, pos=col(3, 640))
    g.add("SaveAnimatedWEBP", {"filename_prefix": "videomage/animatediff", "fps": 8.0}, links={"images": (s, 0)},
          pos=col(4, 640))
    g.add("VideoMageExportSubject", {"name": "my_toy_and_dog"}, links={"subject": (fu, 0)}, pos=col(4, 0))
    g.add("VideoMageExportMotion", {"name": "riding"}, links={"motion": (mo, 0)}, pos=col(4, 1120))
    return g


def sd15_with_exported_subject():
    """A plain SD1.5 text-to-image graph of core nodes using what the AnimateDiff pipeline exported: the
    fused subject's LoRA on the same checkpoint, and its tokens as embeddings in the prompt."""
    g = Graph()
    ck = g.add("CheckpointLoaderSimple", {"ckpt_name": AD_CHECKPOINT}, pos=col(0, 0))
    lo = g.add("LoraLoader", {"lora_name": "my_toy_and_dog_lora.safetensors", "strength_model": 1.0,
                              "strength_clip": 1.0}, links={"model": (ck, 0), "clip": (ck, 1)}, pos=col(1, 0))
    pos = g.add("CLIPTextEncode", {"text": "a photo of embedding:my_toy toy riding embedding:my_dog dog"},
                links={"clip": (lo, 1)}, pos=col(2, 0), title="prompt with the exported embeddings")
    neg = g.add("CLIPTextEncode", {"text": "blurry, low quality"}, links={"clip": (lo, 1)}, pos=col(2, 260),
                title="negative prompt")
    lat = g.add("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}, pos=col(1, 360))
    ks = g.add("KSampler", {"seed": 0, "steps": 25, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
                            "denoise": 1.0},
               links={"model": (lo, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (lat, 0)},
               pos=col(3, 0))
    dec = g.add("VAEDecode", links={"samples": (ks, 0), "vae": (ck, 2)}, pos=col(4, 0))
    g.add("SaveImage", {"filename_prefix": "videomage/sd15_with_exported_subject"}, links={"images": (dec, 0)},
          pos=col(5, 0))
    return g


# Wan 2.1 T2V 1.3B from ComfyUI's own Wan files (the names of ComfyUI's repackaged downloads), at 832 x 480,
# 33 frames (about 2 s at 16 fps), 50 steps, CFG 5 as WanPipeline; the LoRAs exported for the native Wan nodes.
WAN_FILES = {"unet_name": "wan2.1_t2v_1.3B_bf16.safetensors", "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
             "vae_name": "wan_2.1_vae.safetensors"}
WAN_SIZE = {"width": 832, "height": 480}


def wan_full_pipeline():
    """The full pipeline on Wan 2.1, then the fused subject and the motion exported as Wan LoRAs."""
    g = Graph()
    m = g.add("VideoMageLoadWan", dict(WAN_FILES), pos=col(0, -200))
    subjects = []
    for index, row in ((0, 0), (1, 560)):
        token, superclass = REAL_SUBJECTS[index]
        s = user_photos(g, row, token)
        subjects.append(g.add("VideoMageTrainSubject", {"token": token, "superclass": superclass, "seed": index,
                                                        "prior_frames": 17, **WAN_SIZE},
                              links={"model": (m, 0), "images": (s, 0), "masks": (s, 1)}, pos=col(2, row)))
    f = g.add("LoadVideo", {"file": REFERENCE_VIDEO}, pos=col(0, 1120), title="reference video")
    v = g.add("GetVideoComponents", links={"video": (f, 0)}, pos=(420, 1160))
    mo = g.add("VideoMageTrainMotion", {**REAL_MOTION, **WAN_SIZE, "frames": 33},
               links={"model": (m, 0), "video": (v, 0)}, pos=col(2, 1120))
    fu = g.add("VideoMageFuseSubjects", {**WAN_SIZE, "frames": 17},
               links={"model": (m, 0), "subject_1": (subjects[0], 0), "subject_2": (subjects[1], 0)}, pos=col(3, 0))
    s = g.add("VideoMageCollaborativeSampler",
              {"prompt": REAL_PROMPT, **WAN_SIZE, "frames": 33, "steps": 50, "cfg": 5.0},
              links={"model": (m, 0), "subject": (fu, 0), "motion": (mo, 0)}, pos=col(3, 640))
    g.add("SaveAnimatedWEBP", {"filename_prefix": "videomage/wan", "fps": 16.0}, links={"images": (s, 0)},
          pos=col(4, 640))
    g.add("VideoMageExportSubject", {"name": "my_toy_and_dog_wan"}, links={"subject": (fu, 0)}, pos=col(4, 0))
    g.add("VideoMageExportMotion", {"name": "riding_wan"}, links={"motion": (mo, 0)}, pos=col(4, 1120))
    return g


WORKFLOWS = {
    "videomage_full_pipeline": lambda: full_pipeline(False),
    "videomage_sd15_with_exported_subject": sd15_with_exported_subject,
    "videomage_animatediff_full_pipeline": animatediff_full_pipeline,
    "videomage_wan_full_pipeline": wan_full_pipeline,
    "videomage_train_subject": train_subject,
    "videomage_train_motion": train_motion,
    "videomage_sample_saved": sample_saved,
    "videomage_scs_vs_wo_scs": scs_vs_wo_scs,
    "videomage_quick_start_shapesworld": lambda: full_pipeline(True),
}


def thumbnail(ui: dict, path: Path) -> None:
    """A schematic of the graph (node boxes, titles, links) as a 512x384 JPEG."""
    from PIL import Image, ImageDraw

    from videomage_core.plots import _font

    xs = [n["pos"][0] for n in ui["nodes"]] + [n["pos"][0] + n["size"][0] for n in ui["nodes"]]
    ys = [n["pos"][1] for n in ui["nodes"]] + [n["pos"][1] + n["size"][1] for n in ui["nodes"]]
    x0, y0, x1, y1 = min(xs) - 20, min(ys) - 20, max(xs) + 20, max(ys) + 20
    w, h = 512, 384
    scale = min(w / (x1 - x0), (h - 30) / (y1 - y0))
    ox, oy = (w - (x1 - x0) * scale) / 2, 30 + (h - 30 - (y1 - y0) * scale) / 2
    img = Image.new("RGB", (w, h), (32, 34, 40))
    d = ImageDraw.Draw(img)
    d.text((10, 8), path.stem.replace("_", " "), fill=(230, 232, 238), font=_font(15))
    box = {}
    for n in ui["nodes"]:
        bx0 = ox + (n["pos"][0] - x0) * scale
        by0 = oy + (n["pos"][1] - y0) * scale
        box[n["id"]] = (bx0, by0, bx0 + n["size"][0] * scale, by0 + n["size"][1] * scale)
    colours = {
        "VIDEOMAGE_MODEL": (180, 140, 255),
        "VIDEOMAGE_SUBJECT": (255, 160, 80),
        "VIDEOMAGE_MOTION": (90, 200, 255),
        "IMAGE": (120, 220, 140),
        "MASK": (120, 220, 200),
    }
    for lid, src, slot, dst, dslot, ltype in ui["links"]:
        a, b = box[src], box[dst]
        d.line(
            [(a[2], a[1] + 10 + 6 * slot), (b[0], b[1] + 10 + 6 * dslot)],
            fill=colours.get(ltype, (200, 200, 200)),
            width=2,
        )
    for n in ui["nodes"]:
        b = box[n["id"]]
        vm = n["type"].startswith("VideoMage")
        d.rounded_rectangle(
            b,
            radius=4,
            fill=(53, 57, 66) if vm else (45, 48, 55),
            outline=(120, 170, 255) if vm else (110, 110, 120),
        )
        title = n.get("title") or node_spec(n["type"])["display"]
        title = title.replace("VideoMage ", "").replace(" (example data)", "")
        d.text((b[0] + 4, b[1] + 3), title[: int((b[2] - b[0]) / 6)], fill=(235, 235, 240), font=_font(10))
    img.save(path, "JPEG", quality=88)


def render() -> dict[Path, bytes]:
    files = {}
    for stem, build in WORKFLOWS.items():
        ui = build().ui()
        api = ui_to_api(ui)
        files[OUT / f"{stem}.json"] = (json.dumps(ui, indent=1) + "\n").encode()
        files[OUT / "api" / f"{stem}.json"] = (json.dumps(api, indent=1) + "\n").encode()
    return files


def leftovers(files: dict[Path, bytes]) -> list[Path]:
    """Bundled workflow files (and thumbnails) that no entry of WORKFLOWS writes, e.g. a renamed one."""
    wanted = set(files) | {p.with_suffix(".jpg") for p in files if p.parent == OUT}
    found = [
        *OUT.glob("videomage_*.json"),
        *OUT.glob("videomage_*.jpg"),
        *(OUT / "api").glob("videomage_*.json"),
    ]
    return sorted(p for p in found if p not in wanted)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    files = render()
    extra = leftovers(files)
    if args.check:
        stale = [str(p) for p, data in files.items() if not p.is_file() or p.read_bytes() != data]
        for p in stale:
            print(f"out of date: {p}")
        for p in extra:
            print(f"not generated any more: {p}")
        return 1 if stale or extra else 0
    for p in extra:
        p.unlink()
        print(f"removed {p}")
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if p.parent == OUT:
            thumbnail(json.loads(data), p.with_suffix(".jpg"))
    print(f"wrote {len(files)} workflow files and thumbnails to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
