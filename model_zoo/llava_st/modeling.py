"""LlavaSTForCausalLM: SigLIP -> projector -> LAPE -> STP -> Qwen2, with coordinate tokens in and out.

Data flow of one sample (shapes at the 7B defaults, D = 3584):
    frames (T, 3, 384, 384) -> SigLIP hidden_states[-2] (T, 729, 1152) -> projector (T, 729, D)
    -> + rho (LAPE)  -> image: 729 tokens | video (T = N = 100): STP -> F_s (100, 9, D), F_t (20, 81, D)
    -> the `<image>`/`<video>` runs of input_ids are replaced by those tokens (F_s block, then F_t block;
       with `video_fast_tokens="release_text"`, released-weight inference only, the F_s block is replaced by the
       release's `<vid_start>`/`<vid_patch>`/`<vid_end>` text embeddings, as its LLM saw them)
    -> Qwen2 -> logits = [lm_head(h), h E_out^t^T, h E_out^h^T, h E_out^w^T]   (V + M_t + M_h + M_w columns)
The batch contract (input_ids, labels, coord_values, pixel_values, media_kind) is documented in docs/model.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Qwen2ForCausalLM, SiglipVisionModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.utils import ModelOutput

from ..contract import IGNORE_INDEX, MediaKind
from .config import LlavaSTConfig
from .lape import LAPE, LAPETables
from .stp import SpatialTemporalPacker
from .vocab import quantize_values


@dataclass
class LlavaSTOutput(ModelOutput):
    """What `forward` returns. A ModelOutput (an OrderedDict) on purpose: DeepSpeed ZeRO-3 finds the tensors
    of a module's output to hook its backward (and re-gather external parameters) only in tuples, lists and
    dicts, not in a plain dataclass. Field names follow transformers >= 5.24 (`cache`, not `past_key_values`)."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    num_target_tokens: Tensor | None = None
    cache: Cache | None = None


class LlavaSTForCausalLM(PreTrainedModel):
    config_class = LlavaSTConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer"]

    def __init__(self, config: LlavaSTConfig) -> None:
        super().__init__(config.validate())
        self.vision_tower = SiglipVisionModel(config.vision_config)
        d = config.hidden_size
        self.mm_projector = nn.Sequential(
            nn.Linear(config.vision_config.hidden_size, d), nn.GELU(), nn.Linear(d, d))
        self.lape = LAPE(config)
        self.stp = SpatialTemporalPacker(config)
        self.language_model = Qwen2ForCausalLM(config.text_config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only what is ours: the tower and the LLM initialise themselves when built, and loaders overwrite them.
        if module is self.mm_projector:
            for layer in (module[0], module[2]):
                nn.init.normal_(layer.weight, std=self.config.text_config.initializer_range)
                nn.init.zeros_(layer.bias)

    # ---- embeddings ---------------------------------------------------------------------------------
    @property
    def placeholder_start(self) -> int:
        return self.config.text_vocab_size + self.config.coord_vocab_size

    def embed(self, input_ids: Tensor, coord_values: Tensor | None, tables: LAPETables) -> Tensor:
        """Token embeddings: text rows, coordinate tokens from E_in, placeholders interpolated in E_in."""
        v, start = self.config.text_vocab_size, self.placeholder_start
        embeds = self.language_model.get_input_embeddings()(input_ids.clamp(0, v - 1))
        table = tables.input_all.to(embeds.dtype)
        # Both paths run whether or not the batch holds coordinates (then on zero rows): the table's place in
        # the graph, hence when its gradient is ready, must not depend on the data (train/step.py).
        is_coord = (input_ids >= v) & (input_ids < start)
        embeds = embeds.masked_scatter(is_coord[..., None], table[input_ids[is_coord] - v])
        is_placeholder = input_ids >= start
        if coord_values is None:
            if is_placeholder.any():
                raise ValueError("input_ids contain coordinate placeholders but no coord_values were given")
        else:
            # vocab.PLACEHOLDERS is ordered (INPUT, OUTPUT) per axis, TEMP, HEIGHT, WIDTH: id // 2 is the axis
            axis = (input_ids[is_placeholder] - start) // 2
            floor, ceil, ratio = self._quantize(coord_values[is_placeholder], axis)
            rows = (1 - ratio)[:, None] * table[floor] + ratio[:, None] * table[ceil]
            embeds = embeds.masked_scatter(is_placeholder[..., None], rows.to(embeds.dtype))
        return embeds

    def _quantize(self, values: Tensor, axis: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Values in [0, 1] of the given axes -> global floor/ceil rows of the coordinate table and ratio."""
        c = self.config
        floor, ceil, ratio = quantize_values(values, torch.tensor([c.m_t, c.m_h, c.m_w], device=axis.device)[axis])
        offset = torch.tensor([0, c.m_t, c.m_t + c.m_h], device=axis.device)[axis]
        return offset + floor, offset + ceil, ratio.float()

    # ---- vision ---------------------------------------------------------------------------------------
    def encode_media(self, pixel_values: Tensor, media_kind: Tensor, tables: LAPETables) -> list[Tensor]:
        """Visual tokens of every sample with media, in batch order: (729, D) per image, (2520, D) per video."""
        frames_per = torch.where(media_kind == MediaKind.VIDEO, self.config.num_frames,
                                 (media_kind == MediaKind.IMAGE).long())
        if int(frames_per.sum()) != pixel_values.shape[0]:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[0]} frames but media_kind asks for {int(frames_per.sum())} "
                f"({self.config.num_frames} per video, 1 per image)")
        tower_trains = any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(tower_trains and torch.is_grad_enabled()):
            hidden = self.vision_tower(pixel_values.to(self.dtype), output_hidden_states=True).hidden_states
            patches = hidden[self.config.vision_feature_layer]  # (F, g*g, C_vision)
        features = self.mm_projector(patches)  # (F, g*g, D)
        grid = self.config.grid_size
        tokens = []
        for kind, chunk in zip(media_kind[media_kind != MediaKind.TEXT].tolist(),
                               features.split(frames_per[frames_per > 0].tolist()), strict=True):
            is_video = kind == MediaKind.VIDEO
            if self.config.lape_enabled:
                chunk = LAPE.inject(chunk, tables, grid, is_video)
            if is_video:
                f_s, f_t = self.stp(chunk)
                fast = (self.release_video_text_embeds().to(f_t.dtype)
                        if self.config.video_fast_tokens == "release_text" else f_s.flatten(0, 1))
                tokens.append(torch.cat([fast, f_t.flatten(0, 1)]))
            else:
                tokens.append(chunk[0])
        return tokens

    def release_video_text_embeds(self) -> Tensor:
        """(k2^2 N, D): the input-embedding rows of `<vid_start>`, `<vid_patch>` x (k2^2 N - 2), `<vid_end>`.

        What the released LLM saw where F_s belongs (its bug 1; `video_fast_tokens="release_text"`): the text
        embeddings of the tokens the release's prompt held there, which its F_s splice failed to replace.
        """
        c = self.config
        start, patch, end = c.release_video_text_ids
        embedding = self.language_model.get_input_embeddings()
        ids = torch.full((c.k2**2 * c.num_frames,), patch, dtype=torch.long, device=embedding.weight.device)
        ids[0], ids[-1] = start, end
        return embedding(ids)

    def build_inputs_embeds(self, input_ids: Tensor, coord_values: Tensor | None, pixel_values: Tensor | None,
                            media_kind: Tensor | None, tables: LAPETables) -> Tensor:
        embeds = self.embed(input_ids, coord_values, tables)
        visual = (input_ids == self.config.image_token_id) | (input_ids == self.config.video_token_id)
        if pixel_values is None or media_kind is None or not bool((media_kind != MediaKind.TEXT).any()):
            if visual.any():
                raise ValueError("input_ids contain <image>/<video> tokens but no pixel_values/media_kind were given")
            return embeds
        tokens = torch.cat(self.encode_media(pixel_values, media_kind, tables))
        if int(visual.sum()) != tokens.shape[0]:
            raise ValueError(
                f"input_ids hold {int(visual.sum())} visual tokens but the media produce {tokens.shape[0]} "
                f"(image: {self.config.image_seq_len}, video: {self.config.video_seq_len} each)")
        return embeds.masked_scatter(visual[..., None], tokens.to(embeds.dtype))

    # ---- heads and loss -------------------------------------------------------------------------------
    def logits(self, hidden: Tensor, tables: LAPETables) -> Tensor:
        text = self.language_model.lm_head(hidden)
        coord = hidden @ tables.output_all.to(hidden.dtype).t()
        return torch.cat([text, coord], dim=-1)

    def loss(self, hidden: Tensor, labels: Tensor, coord_values: Tensor | None,
             tables: LAPETables) -> tuple[Tensor, Tensor]:
        """Hard CE on text/coordinate labels, soft CE at placeholder labels, mean over target tokens.

        Logits are computed at target positions only, and the soft part touches just two columns per
        coordinate target (no dense seq x vocab one-hot, unlike the release).
        """
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        h = hidden[:, :-1][mask]  # (T, D)
        y = targets[mask]  # (T,)
        count = mask.sum()
        weight = 1.0
        if h.shape[0] == 0:  # no target: one position, weighted 0, keeps the heads in the graph (train/step.py)
            h, y, weight = hidden[:1, 0], targets.new_zeros(1), 0.0
        logits = self.logits(h, tables).float()  # (T, V + M)
        lse = torch.logsumexp(logits, dim=-1)
        is_soft = y >= self.placeholder_start
        if bool(is_soft.any()):
            if coord_values is None:
                raise ValueError("labels contain coordinate placeholders but no coord_values were given")
            values = coord_values[:, 1:][mask][is_soft]
            axis = (y[is_soft] - self.placeholder_start) // 2
            floor, ceil, ratio = self._quantize(values, axis)
            v = self.config.text_vocab_size
            soft_logit = (1 - ratio) * logits[is_soft, v + floor] + ratio * logits[is_soft, v + ceil]
        hard_y = torch.where(is_soft, 0, y)
        target_logit = logits.gather(1, hard_y[:, None])[:, 0]
        if bool(is_soft.any()):
            target_logit = target_logit.masked_scatter(is_soft, soft_logit)
        return (lse - target_logit).sum() * weight / count.clamp(min=1), count

    def _participation(self, media_kind: Tensor | None, tables: LAPETables, hidden: Tensor) -> Tensor:
        """Zero terms that keep every trainable STP/LAPE parameter in the graph whatever the batch holds.

        DeepSpeed reduces gradients in buckets across data-parallel ranks; a rank whose batch has no video
        (STP unused) or no coordinates (LAPE input tables unused) must still produce those gradients (zeros).
        """
        extra = (tables.input_all.sum() + tables.output_all.sum()) * 0.0
        has_video = media_kind is not None and bool((media_kind == MediaKind.VIDEO).any())
        if not has_video and any(p.requires_grad for p in self.stp.parameters()):
            grid = self.config.grid_size
            extra = extra + self.stp.participation(hidden.new_zeros(1, grid * grid, self.config.hidden_size))
        return extra

    # ---- forward / generate ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        coord_values: Tensor | None = None,
        pixel_values: Tensor | None = None,
        media_kind: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        return_logits: bool | None = None,
    ) -> LlavaSTOutput:
        """Loss when `labels` are given; full logits when `return_logits` (default: no labels).

        With `use_cache`, the returned `cache` is the KV cache (the one passed in, extended in place, or a new one).
        """
        tables = self.lape()
        embeds = self.build_inputs_embeds(input_ids, coord_values, pixel_values, media_kind, tables)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config.text_config)
        out = self.language_model.model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, use_cache=use_cache)
        hidden = out.last_hidden_state
        loss = count = None
        if labels is not None:
            loss, count = self.loss(hidden, labels, coord_values, tables)
            if torch.is_grad_enabled():
                loss = loss + self._participation(media_kind, tables, hidden)
        want_logits = labels is None if return_logits is None else return_logits
        logits = self.logits(hidden, tables) if want_logits else None
        return LlavaSTOutput(loss=loss, logits=logits, num_target_tokens=count, cache=cache if use_cache else None)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        coord_values: Tensor | None = None,
        pixel_values: Tensor | None = None,
        media_kind: Tensor | None = None,
        max_new_tokens: int = 64,
        eos_token_id: int | None = None,
    ) -> Tensor:
        """Greedy decoding with a KV cache; prompts LEFT-padded. Returns the new tokens (B, <= max_new_tokens).

        Generated ids >= V are coordinate tokens (embedded from E_in on the way back in); decode the text
        with the tokenizer (special tokens kept) and read with `llavast.evaluate.answers.parse_answer`.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        tables = self.lape()
        embeds = self.build_inputs_embeds(input_ids, coord_values, pixel_values, media_kind, tables)
        cache = DynamicCache(config=self.config.text_config)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new_tokens = []
        for _ in range(max_new_tokens):
            out = self.language_model.model(inputs_embeds=embeds, attention_mask=attention_mask,
                                            position_ids=positions, cache=cache, use_cache=True)
            logits = self.logits(out.last_hidden_state[:, -1], tables)
            logits[:, self.placeholder_start:] = float("-inf")  # defensive: placeholders are never emitted
            token = logits.argmax(-1)
            if eos_token_id is not None:
                token = torch.where(done, eos_token_id, token)
                done |= token == eos_token_id
            new_tokens.append(token)
            if bool(done.all()):
                break
            embeds = self.embed(token[:, None], None, tables)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], -1)
            positions = positions[:, -1:] + 1
        return torch.stack(new_tokens, dim=1)
