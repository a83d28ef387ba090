"""Where and how a model is (re)trained: device and mixed precision (``device``), data parallelism under
torchrun (``ddp``), the training and evaluation loop (``train``), distillation (``distill``), BatchNorm
re-estimation (``bnstats``) and the recovery a job configures from them (``recovery``)."""
