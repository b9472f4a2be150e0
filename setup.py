from setuptools import find_packages, setup

setup(
    name="classcam",
    version="0.1.0",
    description="A classroom camera a teacher uses to record their own lessons, encrypted to them",
    python_requires=">=3.11",
    packages=find_packages(include=["appliance*", "capture*", "uploader*", "led_indicator*",
                                    "hwsim*"]),
    install_requires=[
        "cryptography>=41",
        "PyJWT[crypto]>=2.8",
        "pyrage>=1.1",
        "gpiozero>=2.0",
        "pydantic>=2.5",
        "sdnotify>=0.3",
        "pyserial>=3.5",
        "av>=12",
        "numpy>=1.24",
        "requests>=2.31",
        "tenacity>=8.2",
    ],
    extras_require={
        # OpenCV is not here: no Pi backend reads a camera through it (capture/opencv.py serves
        # the simulator's video files and tests), and its wheel would add 75 MB, a second
        # FFmpeg and an OpenSSL 1.1 to the Debian package.
        "pi": ["sounddevice>=0.4"],
        "sim": ["sounddevice>=0.4", "tomli-w>=1.0", "opencv-python-headless>=4.8"],
        "test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["classcam = appliance.cli:main"]},
)
