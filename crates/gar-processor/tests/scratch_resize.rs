// TEMPORARY exploration harness (deleted before hand-off).
use gar_processor::Arith;
#[test]
fn scratch_float_vs_torch() {
    let img = gar_processor::load_image("/work/shared/data/assets/demo_image_2.jpg", &Default::default()).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planes = vec![0u8; 3 * w * h];
    for (i, px) in img.as_raw().chunks(3).enumerate() { for c in 0..3 { planes[c * w * h + i] = px[c]; } }
    for (oh, ow) in [(1365usize, 1344usize), (896, 2048), (896, 1344), (448, 448)] {
        let want: Vec<f32> = std::fs::read(format!("/tmp/rz/f_{oh}x{ow}.f32")).unwrap().chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let got = gar_processor::scratch_float(&planes, 3, (h, w), (oh, ow), Arith::Fused);
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let maxd = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("{oh}x{ow}: {diff} / {} float differ, max {maxd}", want.len());
        let mut shown = 0;
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if a != b && shown < 5 { println!("  idx {i} (c {} y {} x {}): ours {a:.9} torch {b:.9}", i / (oh*ow), (i / ow) % oh, i % ow); shown += 1; }
        }
    }
}
