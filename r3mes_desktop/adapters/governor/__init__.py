"""The governor's real sources: psutil (battery, CPU load, programs), X11 idle time
(XScreenSaver through ctypes) and NVML (GPU temperature and power). Each reads `Unknown`
with a Notice when it cannot read, never raises (`core.governor` says what each policy then
does)."""
