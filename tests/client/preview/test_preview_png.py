"""Decodes a PNG with PIL and compares it with the raw RGB8 bytes it should hold.

Usage: test_preview_png.py IMAGE.png EXPECTED.rgb WIDTH HEIGHT
Also checks every chunk's CRC-32. Exit status: 0 same pixels, 1 different (reason on
stderr), 77 PIL is not installed.
Run by preview_test (tests/client/preview/preview_test.cc), which writes both files.
"""
import struct
import sys
import zlib

try:
    from PIL import Image
except ImportError:
    print("PIL (python3-pil) is not installed", file=sys.stderr)
    sys.exit(77)


def check_chunks(png_path):
    """PIL skips some CRCs (IDAT's among them): walk the chunks and check every one."""
    with open(png_path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "bad signature"
    at, types = 8, []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        body = data[at + 4:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        if zlib.crc32(body) != crc:
            return f"bad CRC in chunk {body[:4]!r}"
        types.append(body[:4])
        at += 12 + length
    if types[0] != b"IHDR" or types[-1] != b"IEND":
        return f"chunks {types}"
    return None


def main():
    png_path, raw_path, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    problem = check_chunks(png_path)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    with Image.open(png_path) as image:
        image.load()  # decodes fully: a bad CRC or deflate stream raises here
        if image.format != "PNG" or image.mode != "RGB":
            print(f"format {image.format} mode {image.mode}, want PNG RGB", file=sys.stderr)
            return 1
        if image.size != (width, height):
            print(f"size {image.size}, want {(width, height)}", file=sys.stderr)
            return 1
        decoded = image.tobytes()
    with open(raw_path, "rb") as f:
        expected = f.read()
    if len(decoded) != len(expected):
        print(f"{len(decoded)} bytes decoded, {len(expected)} expected", file=sys.stderr)
        return 1
    for i, (got, want) in enumerate(zip(decoded, expected)):
        if got != want:
            pixel = i // 3
            print(f"pixel ({pixel % width}, {pixel // width}) channel {i % 3}: {got}, want {want}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
