package web_test

import (
	"image"
	"image/color"
	"image/draw"
	"sort"
)

// scaleDown halves img (averaging 2×2 blocks) while it is wider than
// width: a screenshot taken at twice the scale reads fine at half.
func scaleDown(img image.Image, width int) image.Image {
	for img.Bounds().Dx() > width {
		b := img.Bounds()
		out := image.NewRGBA(image.Rect(0, 0, b.Dx()/2, b.Dy()/2))
		for y := 0; y < out.Bounds().Dy(); y++ {
			for x := 0; x < out.Bounds().Dx(); x++ {
				var r, g, bl, a uint32
				for _, d := range [4][2]int{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
					cr, cg, cb, ca := img.At(b.Min.X+2*x+d[0], b.Min.Y+2*y+d[1]).RGBA()
					r, g, bl, a = r+cr, g+cg, bl+cb, a+ca
				}
				out.Set(x, y, color.RGBA64{uint16(r / 4), uint16(g / 4), uint16(bl / 4), uint16(a / 4)})
			}
		}
		img = out
	}
	return img
}

// toPaletted maps img onto its 256 most frequent colours (counted at 5
// bits a channel), without dithering: flat page colours stay flat, and the
// file is a fraction of a true-colour PNG.
func toPaletted(img image.Image) *image.Paletted {
	b := img.Bounds()
	counts := map[uint16]int{}
	key := func(c color.Color) uint16 {
		r, g, bl, _ := c.RGBA()
		return uint16(r>>11)<<10 | uint16(g>>11)<<5 | uint16(bl>>11)
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			counts[key(img.At(x, y))]++
		}
	}
	keys := make([]uint16, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	if len(keys) > 256 {
		keys = keys[:256]
	}
	pal := make(color.Palette, len(keys))
	for i, k := range keys {
		expand := func(v uint16) uint8 { return uint8(v<<3 | v>>2) }
		pal[i] = color.RGBA{expand(k >> 10 & 31), expand(k >> 5 & 31), expand(k & 31), 255}
	}
	out := image.NewPaletted(b, pal)
	draw.Draw(out, b, img, b.Min, draw.Src)
	return out
}
