"""BERT sequence classification with the pooling webtune trained the head on.

Written by webtune next to a classifier it exported with "cls" or "mean" pooling, because
transformers' own BertForSequenceClassification always classifies the pooler output
(tanh(dense(h[CLS]))) and would predict differently from the model you fine-tuned. Load with

    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)

config.json's `auto_map` points here; `webtune_pooling` says which pooling to use. Without
`trust_remote_code=True` transformers loads its own class, which ignores the pooling.
"""

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel


class WebtuneBertForSequenceClassification(BertPreTrainedModel):
    # The export keeps the checkpoint's pooler weights even when the head does not use them.
    _keys_to_ignore_on_load_unexpected = [r"pooler"]

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pooling = getattr(config, "webtune_pooling", "pooler") or "pooler"
        if self.pooling not in ("cls", "mean", "pooler"):
            raise ValueError(f"unknown webtune_pooling {self.pooling!r}: expected cls, mean or pooler")
        self.bert = BertModel(config, add_pooling_layer=self.pooling == "pooler")
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        kwargs.pop("return_dict", None)
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            if attention_mask is None:
                attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            # The mean over non-padding tokens, the count clamped as sentence-transformers does.
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
