"""A slow, obviously-correct YouTube-VIS evaluator for the tests: a line-by-line transcription of the official
ytvoseval/oviseval loops (``../shared/reference/ytvis_metric.md``) on dense numpy masks and Python loops.

It shares no code with ``vistr_lit.evaluation``: masks are decoded to pixels, IoU is summed per frame with
numpy, matching and accumulation are the official nested loops. Valid inputs only (equal list lengths).
"""

import math

import numpy as np
from pycocotools import mask as mask_utils

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = [1, 10, 100]
AREA_RNG = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]
AREA_LBL = ["all", "small", "medium", "large"]
OCC_RNG = [[0, 1], [0, 0.25], [0.25, 0.5], [0.5, 1]]
OCC_LBL = ["all", "light", "medium", "heavy"]
OCC_SCORE = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


def _dense(segm, h, w):
    """Pixels of one frame segmentation (polygon, uncompressed or compressed RLE), or None if falsy."""
    if not segm:
        return None
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(bool)


def _avg_area(values):
    kept = [a for a in values if a]
    return 0 if len(kept) == 0 else np.array(kept).mean()


def reference_evaluate(gt: dict, results: list[dict], video_ids=None) -> dict[str, float]:
    videos = {v["id"]: v for v in gt["videos"]}
    vid_ids = sorted(videos) if video_ids is None else sorted(set(video_ids))
    cat_ids = sorted(c["id"] for c in gt["categories"])
    anns = gt.get("annotations") or []
    ovis = bool(anns) and all("occlusion" in a for a in anns)
    gts, dts = {}, {}
    for a in anns:
        if a["video_id"] not in vid_ids:
            continue
        v = videos[a["video_id"]]
        g = {
            "id": a["id"],
            "masks": [_dense(s, v["height"], v["width"]) for s in a["segmentations"]],
            "avg_area": _avg_area(a["areas"]),
            "iscrowd": a["iscrowd"],
            "ignore": bool(a["iscrowd"]),
        }
        if ovis:
            scores = sorted(OCC_SCORE[x] for x in a["occlusion"] if x is not None)
            top = scores[-math.ceil(len(scores) / 2) :]
            g["occ_score"] = sum(top) / len(top)
        gts.setdefault((a["video_id"], a["category_id"]), []).append(g)
    for i, r in enumerate(results):
        v = videos[r["video_id"]]
        masks = [_dense(s, v["height"], v["width"]) for s in r["segmentations"]]
        areas = [int(m.sum()) if m is not None else None for m in masks]
        d = {"id": i + 1, "masks": masks, "score": r["score"], "avg_area": _avg_area(areas)}
        dts.setdefault((r["video_id"], r["category_id"]), []).append(d)

    def iou_seq(d_seq, g_seq):
        i = u = 0.0
        for d, g in zip(d_seq, g_seq):
            if d is not None and g is not None:
                i += float(np.logical_and(d, g).sum())
                u += float(np.logical_or(d, g).sum())
            elif g is not None:
                u += float(g.sum())
            elif d is not None:
                u += float(d.sum())
        return i / u if u > 0 else 0.0

    def compute_iou(vid, cat):
        gt_, dt_ = gts.get((vid, cat), []), dts.get((vid, cat), [])
        if not gt_ and not dt_:
            return []
        inds = np.argsort([-d["score"] for d in dt_], kind="mergesort")
        dt_ = [dt_[i] for i in inds][: MAX_DETS[-1]]
        ious = np.zeros([len(dt_), len(gt_)])
        for i, j in np.ndindex(ious.shape):
            ious[i, j] = iou_seq(dt_[i]["masks"], gt_[j]["masks"])
        return ious

    ious = {(v, c): compute_iou(v, c) for v in vid_ids for c in cat_ids}

    def evaluate_vid(vid, cat, a_rng, o_rng, max_det):
        gt_, dt_ = gts.get((vid, cat), []), dts.get((vid, cat), [])
        if not gt_ and not dt_:
            return None
        for g in gt_:
            out_occ = ovis and (g["occ_score"] < o_rng[0] or g["occ_score"] > o_rng[1])
            g["_ignore"] = int(g["ignore"] or g["avg_area"] < a_rng[0] or g["avg_area"] > a_rng[1] or out_occ)
        gtind = np.argsort([g["_ignore"] for g in gt_], kind="mergesort")
        gt_ = [gt_[i] for i in gtind]
        dtind = np.argsort([-d["score"] for d in dt_], kind="mergesort")
        dt_ = [dt_[i] for i in dtind[0:max_det]]
        iscrowd = [int(o["iscrowd"]) for o in gt_]
        iou_m = ious[vid, cat][:, gtind] if len(ious[vid, cat]) > 0 else ious[vid, cat]
        T, G, D = len(IOU_THRS), len(gt_), len(dt_)
        gtm, dtm = np.zeros((T, G)), np.zeros((T, D))
        gt_ig = np.array([g["_ignore"] for g in gt_])
        dt_ig = np.zeros((T, D))
        if len(iou_m) != 0:
            for tind, t in enumerate(IOU_THRS):
                for dind, d in enumerate(dt_):
                    iou = min([t, 1 - 1e-10])
                    m = -1
                    for gind, _g in enumerate(gt_):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if m > -1 and gt_ig[m] == 0 and gt_ig[gind] == 1:
                            break
                        if iou_m[dind, gind] < iou:
                            continue
                        iou = iou_m[dind, gind]
                        m = gind
                    if m == -1:
                        continue
                    dt_ig[tind, dind] = gt_ig[m]
                    dtm[tind, dind] = gt_[m]["id"]
                    gtm[tind, m] = d["id"]
        a = np.array([d["avg_area"] < a_rng[0] or d["avg_area"] > a_rng[1] for d in dt_])
        a = a.reshape((1, len(dt_)))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {"dtMatches": dtm, "dtScores": [d["score"] for d in dt_], "gtIgnore": gt_ig, "dtIgnore": dt_ig}

    o_rngs = OCC_RNG if ovis else OCC_RNG[:1]
    evals = {
        (k, a, o, v): evaluate_vid(vid, cat, a_rng, o_rng, MAX_DETS[-1])
        for k, cat in enumerate(cat_ids)
        for a, a_rng in enumerate(AREA_RNG)
        for o, o_rng in enumerate(o_rngs)
        for v, vid in enumerate(vid_ids)
    }
    T, R, K, A, O, M = len(IOU_THRS), len(REC_THRS), len(cat_ids), 4, len(o_rngs), 3
    precision = -np.ones((T, R, K, A, O, M))
    recall = -np.ones((T, K, A, O, M))
    for k in range(K):
        for a in range(A):
            for o in range(O):
                for m, max_det in enumerate(MAX_DETS):
                    E = [evals[k, a, o, v] for v in range(len(vid_ids))]
                    E = [e for e in E if e is not None]
                    if len(E) == 0:
                        continue
                    dt_scores = np.concatenate([e["dtScores"][0:max_det] for e in E])
                    inds = np.argsort(-dt_scores, kind="mergesort")
                    dtm = np.concatenate([e["dtMatches"][:, 0:max_det] for e in E], axis=1)[:, inds]
                    dt_ig = np.concatenate([e["dtIgnore"][:, 0:max_det] for e in E], axis=1)[:, inds]
                    gt_ig = np.concatenate([e["gtIgnore"] for e in E])
                    npig = np.count_nonzero(gt_ig == 0)
                    if npig == 0:
                        continue
                    tps = np.logical_and(dtm, np.logical_not(dt_ig))
                    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                        nd = len(tp)
                        rc = tp / npig
                        pr = tp / (fp + tp + np.spacing(1))
                        q = np.zeros((R,))
                        recall[t, k, a, o, m] = rc[-1] if nd else 0
                        pr = pr.tolist()
                        q = q.tolist()
                        for i in range(nd - 1, 0, -1):
                            if pr[i] > pr[i - 1]:
                                pr[i - 1] = pr[i]
                        inds = np.searchsorted(rc, REC_THRS, side="left")
                        for ri, pi in enumerate(inds):
                            if pi >= len(pr):
                                break
                            q[ri] = pr[pi]
                        precision[t, :, k, a, o, m] = np.array(q)

    def summarize(ap, iou_thr=None, area="all", occ="all", max_dets=100):
        aind = [AREA_LBL.index(area)]
        oind = [OCC_LBL.index(occ)]
        mind = [MAX_DETS.index(max_dets)]
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        s = s[:, :, :, aind, oind, mind] if ap else s[:, :, aind, oind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    stats = {
        "AP": summarize(1),
        "AP50": summarize(1, iou_thr=0.5),
        "AP75": summarize(1, iou_thr=0.75),
        "APs": summarize(1, area="small"),
        "APm": summarize(1, area="medium"),
        "APl": summarize(1, area="large"),
    }
    if ovis:
        stats.update({f"AP_{o}": summarize(1, occ=o) for o in OCC_LBL[1:]})
    stats.update(
        {
            "AR1": summarize(0, max_dets=1),
            "AR10": summarize(0, max_dets=10),
            "AR100": summarize(0, max_dets=100),
            "ARs": summarize(0, area="small"),
            "ARm": summarize(0, area="medium"),
            "ARl": summarize(0, area="large"),
        }
    )
    if ovis:
        stats.update({f"AR_{o}": summarize(0, occ=o) for o in OCC_LBL[1:]})
    return stats
