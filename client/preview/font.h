// A tiny embedded 5x7 bitmap font for labelling preview images, so that the client needs no
// font files or text renderer. It covers printable ASCII letters (upper and lower case),
// digits and the punctuation the previews use: space . : - % / ( ) = , + _ ? ! ' # [ ] < > *.
// Glyphs sit in a 6x8 cell (one column and one row of spacing); characters without a glyph
// are drawn as a hollow box so that missing coverage is visible rather than silent.
//
// All functions are pure or write only to the image they are given; they are thread-safe.
#ifndef DANET_CLIENT_PREVIEW_FONT_H_
#define DANET_CLIENT_PREVIEW_FONT_H_

#include <string_view>

#include "client/preview/png.h"

namespace danet::preview {

// Glyph size in font pixels.
inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphHeight = 7;
// Horizontal advance per character and line height, in font pixels.
inline constexpr int kGlyphAdvance = kGlyphWidth + 1;
inline constexpr int kLineHeight = kGlyphHeight + 1;

// True when `c` has a glyph (otherwise DrawText draws a box for it).
bool HasGlyph(char c);

// Width in image pixels of `text` drawn at `scale` (no trailing spacing column); 0 for "".
int TextWidth(std::string_view text, int scale = 1);

// Draws `text` on one line with its top-left corner at (x, y), each font pixel a scale x scale
// square (scale < 1 counts as 1). Only glyph pixels are set; the background is left as is.
// Clipped to the image. '\n' is not special.
void DrawText(Image* image, int x, int y, std::string_view text, Rgb colour, int scale = 1);

}  // namespace danet::preview

#endif  // DANET_CLIENT_PREVIEW_FONT_H_
