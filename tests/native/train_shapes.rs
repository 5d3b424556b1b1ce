//! The built-in `shapes` image set (train::shapes): a pure function of seed and index, each
//! image its shape in its colour over a two-colour gradient.

use cdl::train::shapes::{generate, Scene, Shape};

#[test]
fn images_are_a_pure_function_of_seed_and_index() {
    let a = generate(6, 32, 7);
    let b = generate(3, 32, 7);
    assert_eq!(a.len(), 6);
    assert_eq!(a.images.len(), 6 * 3 * 32 * 32);
    assert_eq!(&a.images[..b.images.len()], &b.images[..], "a prefix of a longer set is the shorter set");
    assert_ne!(generate(1, 32, 8).images, b.image(0), "another seed draws other images");
    assert_ne!(a.image(0), a.image(1));
}

#[test]
fn the_shape_has_its_colour_and_the_background_the_gradient() {
    for i in 0..30 {
        let s = Scene::of(3, i);
        let size = 32;
        let img = s.render(size);
        let plane = size * size;
        let at = |x: f64, y: f64, ch: usize| {
            let (c, r) = ((x * size as f64) as usize, (y * size as f64) as usize);
            f64::from(img[ch * plane + r.min(size - 1) * size + c.min(size - 1)]) / 255.0
        };
        // The centre pixel is the shape's colour (up to rounding).
        for ch in 0..3 {
            assert!((at(s.center[0], s.center[1], ch) - s.colors[2][ch]).abs() < 0.01, "image {i}");
        }
        // A corner far from the shape is a mix of the two gradient colours.
        let corner = [[0.0, 0.0], [0.99, 0.0], [0.0, 0.99], [0.99, 0.99]]
            .into_iter()
            .find(|p| s.distance(*p) > 0.1)
            .expect("some corner lies outside the shape");
        for ch in 0..3 {
            let (a, b) = (s.colors[0][ch], s.colors[1][ch]);
            let v = at(corner[0], corner[1], ch);
            assert!(v >= a.min(b) - 0.01 && v <= a.max(b) + 0.01, "image {i} channel {ch}: {v}");
        }
    }
}

#[test]
fn every_kind_of_shape_is_drawn_around_a_centre_that_keeps_it_mostly_inside() {
    let scenes: Vec<Scene> = (0..60).map(|i| Scene::of(1, i)).collect();
    for kind in [Shape::Disc, Shape::Square, Shape::Triangle] {
        assert!(scenes.iter().any(|s| s.shape == kind), "{kind:?} never drawn");
    }
    for s in &scenes {
        assert!(s.radius >= 0.14 && s.radius <= 0.30);
        for c in s.center {
            assert!(c - s.radius >= -1e-12 && c + s.radius <= 1.0 + 1e-12);
        }
        // Inside at the centre, outside beyond √2 radii (a square's corner).
        assert!(s.distance(s.center) < 0.0);
        assert!(s.distance([s.center[0] + 1.45 * s.radius, s.center[1]]) > 0.0);
    }
}
