from setuptools import find_packages, setup

setup(
    name="rdrop-fairseq",
    version="0.1.0",
    description="R-Drop (Regularized Dropout) as a fairseq --user-dir plugin for translation",
    packages=find_packages(include=["rdrop_fairseq", "rdrop_fairseq.*", "rdrop_tools"]),
    python_requires=">=3.10",
    install_requires=[
        # stock fairseq 0.12.2 cannot be imported on Python 3.11; this is a prebuilt wheel of
        # fairseq main (module name `fairseq`). Fallback: fairseq-fixed==0.12.3.1, see README.
        "ve-fairseq==0.12.3",
        "torch==2.13.0",
        "hydra-core==1.3.8",
        "omegaconf==2.3.1",
        "sacrebleu==2.6.0",
        "sentencepiece==0.2.3",
        "sacremoses==0.2.0",
    ],
    extras_require={
        # triton: the CUDA loss kernel (its tests run it on the CPU with TRITON_INTERPRET=1);
        # the GPU machine's image ships 3.6
        "test": [
            "pytest==9.2.0",
            "triton==3.6.0; platform_system == 'Linux'",
            "ctranslate2==4.8.5",
        ],
        "plot": ["matplotlib==3.11.2"],
        "ctranslate2": ["ctranslate2==4.8.5"],
    },
)
