"""Applications of low-rank residuals beyond fine-tuning a language model: residual-feature anomaly
detection (ResAD++) and LumaFlux's monotone spline tone decoder so far. Each is a small, real pipeline on
data that needs no download; each module's docstring says what it scales down from its paper."""
