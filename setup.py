"""Packaging for k2ssl_lit: every setting lives in settings.ini, which nbdev reads too."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
lic_name, lic_classifier = licenses[cfg["license"]]
py_versions = ["3.10", "3.11", "3.12", "3.13"]

def split_list(key):
    "A whitespace-separated settings.ini entry as a list."
    return cfg.get(key, "").split()

setuptools.setup(
    name=cfg["lib_name"].replace("_", "-"),
    version=cfg["version"],
    description=cfg["description"],
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=lic_name,
    url=cfg["git_url"],
    keywords=cfg["keywords"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"])],
        "Intended Audience :: " + cfg["audience"],
        "License :: " + lic_classifier,
        "Natural Language :: " + cfg["language"],
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ] + [f"Programming Language :: Python :: {v}" for v in py_versions[py_versions.index(cfg["min_python"]):]],
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    include_package_data=True,
    python_requires=">=" + cfg["min_python"],
    install_requires=split_list("requirements"),
    extras_require={"dev": split_list("dev_requirements"), "docs": split_list("docs_requirements")},
    entry_points={
        "console_scripts": split_list("console_scripts"),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
