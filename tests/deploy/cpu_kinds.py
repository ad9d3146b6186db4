"""Stand-ins for the CPU kinds the project runs on, for the tests that patch ``cpu.cpu_features``.

The deployment settings (int8 quantization, bf16, the probe's cache key) are chosen from these
features, so each kind's expectations are checked on whichever machine runs the tests.
"""

from mobilenets.deploy.cpu import CpuFeatures

# AMD EPYC Zen 2-3: AVX2 and FMA only (no AVX-512, VNNI, bf16)
AVX2_EPYC = CpuFeatures("AuthenticAMD", "AMD EPYC", 2, avx2=True, avx512=False, avx512_vnni=False, avx_vnni=False,
                        avx512_bf16=False, amx=False)
# Intel Xeon (Sapphire Rapids and later): AVX-512 with VNNI and BF16, AMX
XEON_AMX = CpuFeatures("GenuineIntel", "Intel Xeon (AMX)", 2, avx2=True, avx512=True, avx512_vnni=True, avx_vnni=True,
                       avx512_bf16=True, amx=True)
