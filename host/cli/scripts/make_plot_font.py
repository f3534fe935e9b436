"""Makes host/cli/assets/fonts/DejaVuSans-plot.ttf, the font `fedotp plot` draws its PNG text with.

A subset of DejaVu Sans (Bitstream Vera licence, see host/cli/assets/fonts/LICENSE) holding Basic
Latin, Latin-1 and the few symbols plot labels use, so the binary needs no system font and stays
small. Run from the repository root:

    pip install fonttools
    python host/cli/scripts/make_plot_font.py [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]
"""

import sys

from fontTools import subset

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
TARGET = "host/cli/assets/fonts/DejaVuSans-plot.ttf"

# Basic Latin and Latin-1, then: en and em dashes, bullet, ellipsis, minus, multiplication sign
# (in Latin-1), Greek letters of the methods' parameters (beta, gamma, epsilon, mu), ±, ≤, ≥.
UNICODES = (
    list(range(0x20, 0x7F))
    + list(range(0xA0, 0x100))
    + [0x2013, 0x2014, 0x2022, 0x2026, 0x2212, 0x03B2, 0x03B3, 0x03B5, 0x03BC, 0x2264, 0x2265]
)

options = subset.Options()
options.layout_features = ["kern"]
options.hinting = False
options.name_IDs = ["*"]
options.notdef_outline = True
font = subset.load_font(SOURCE, options)
subsetter = subset.Subsetter(options)
subsetter.populate(unicodes=UNICODES)
subsetter.subset(font)
subset.save_font(font, TARGET, options)
print(f"wrote {TARGET}")
