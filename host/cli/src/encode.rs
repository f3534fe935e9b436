//! `fedotp encode`: CLIP's image tokens, image embeddings and text embeddings of files, into one
//! safetensors file — for feature caches and for checking the model against another
//! implementation. With `--gray-window`, 16-bit grayscale PNGs (CT, MR, X-ray) are read through a
//! display window, as `fedotp train` reads them with `dataset.gray_window`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::{on_device, CliError};
use fedotp_host::backend::{Backend, Device, OnBackend};
use fedotp_host::clip::{vision_forward, ClipWeights, TextTokenizer};
use fedotp_host::data::{list_images, GrayWindow, RgbImage};
use fedotp_host::prompt::PromptLearner;
use fedotp_host::run::write_atomic;
use fedotp_host::train::{FrozenClip, TrainError};

/// Arguments of `fedotp encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// CLIP weights: a safetensors file, or a directory holding one (either layout).
    #[arg(long, value_name = "PATH")]
    pub clip: PathBuf,
    /// Images: JPEG or PNG files, or directories (their image files, recursively, in name
    /// order; each directory once, no symbolic link out of the directory given).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// A text file with one text per line.
    #[arg(long, value_name = "FILE")]
    pub texts: Option<PathBuf>,
    /// The output safetensors file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Read 16-bit grayscale PNGs through a display window: CENTRE,WIDTH (DICOM's linear VOI
    /// LUT, in stored units; width >= 1) or full-range, as `dataset.gray_window` in training.
    /// 8-bit and colour files decode as without it; without it, 16-bit gray is scaled as
    /// full-range scales it (round(v / 257)). Recorded as the output's `gray_window` metadata.
    #[arg(
        long,
        value_name = "CENTRE,WIDTH|full-range",
        value_parser = parse_gray_window,
        allow_hyphen_values = true
    )]
    pub gray_window: Option<GrayWindow>,
    /// The compute device: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Images per image-tower pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--gray-window`'s value: `CENTRE,WIDTH` or `full-range` (also written `full_range`, as in a
/// configuration). A malformed, non-finite or narrower-than-1 window is refused; clap's error
/// names the option and the value.
fn parse_gray_window(value: &str) -> Result<GrayWindow, String> {
    if matches!(value.trim(), "full-range" | "full_range") {
        return Ok(GrayWindow::FullRange);
    }
    let Some((centre, width)) = value.split_once(',') else {
        return Err("expected CENTRE,WIDTH (e.g. 1064,400) or full-range".into());
    };
    let number = |text: &str, what: &str| {
        text.trim()
            .parse::<f64>()
            .map_err(|_| format!("the window {what} {:?} is not a number", text.trim()))
    };
    let window = GrayWindow::CentreWidth {
        centre: number(centre, "centre")?,
        width: number(width, "width")?,
    };
    window.validate().map_err(|e| e.to_string())?;
    Ok(window)
}

/// Runs `fedotp encode`.
pub fn encode(args: &EncodeArgs) -> Result<(), CliError> {
    let images = image_files(&args.images)?;
    let texts = match &args.texts {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?
            .lines()
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    if images.is_empty() && texts.is_empty() {
        return Err(CliError::Input(
            "nothing to encode: give --images and/or --texts".into(),
        ));
    }
    check_output(&args.out, args, &images)?;
    let weights = ClipWeights::load(&args.clip).map_err(TrainError::from)?;
    let tokenizer =
        TextTokenizer::for_model(&args.clip, &weights.config).map_err(TrainError::from)?;
    let encoded = on_device(
        args.device,
        EncodeJob {
            weights,
            tokenizer,
            images: &images,
            texts: &texts,
            gray_window: args.gray_window,
            batch: args.batch as usize,
            quiet: args.quiet,
        },
    )?;
    let bytes = encoded.to_safetensors(&images, args.gray_window)?;
    write_atomic(&args.out, &bytes)?;
    println!(
        "wrote {}: {} images, {} texts",
        args.out.display(),
        images.len(),
        texts.len()
    );
    Ok(())
}

/// The files `paths` name: files as given, directories expanded to their JPEG and PNG files as
/// an ImageFolder class lists them (`fedotp_host::data::list_images`: name order, each directory
/// once, no symbolic link out of the directory given).
fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(list_images(path).map_err(|e| CliError::Input(e.to_string()))?);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(CliError::Input(format!(
                "{}: no such file or directory",
                path.display()
            )));
        }
    }
    Ok(files)
}

/// Refuses an output file that is one of the inputs (the weights, an image, the texts) or lies
/// in the weights' directory: writing it would destroy what is being read.
fn check_output(out: &Path, args: &EncodeArgs, images: &[PathBuf]) -> Result<(), CliError> {
    // The output may not exist yet: compare through its directory's canonical path.
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(parent) = parent.canonicalize() else {
        return Ok(()); // writing will say the directory is missing
    };
    let target = out
        .file_name()
        .map_or(parent.clone(), |name| parent.join(name));
    let target = target.canonicalize().unwrap_or(target);
    let same = |input: &Path| input.canonicalize().is_ok_and(|c| c == target);
    let clip = args.clip.canonicalize().ok();
    let in_weights = clip
        .as_ref()
        .is_some_and(|c| c.is_dir() && target.starts_with(c));
    let input = if same(&args.clip) || in_weights {
        Some(args.clip.clone())
    } else {
        images
            .iter()
            .chain(args.texts.iter())
            .find(|input| same(input))
            .cloned()
    };
    match input {
        Some(input) => Err(CliError::Input(format!(
            "--out {}: it is (or is inside) the input {}; choose another output file",
            out.display(),
            input.display()
        ))),
        None => Ok(()),
    }
}

/// What `fedotp encode` computed, on the host.
struct Encoded {
    /// `images × tokens × embed`.
    image_tokens: Vec<f32>,
    /// `images × embed`.
    image_embeds: Vec<f32>,
    /// `texts × embed`.
    text_embeds: Vec<f32>,
    tokens_per_image: usize,
    embed_dim: usize,
}

impl Encoded {
    /// The tensors, with the image files (and the window they were read through, when one was
    /// given) as metadata.
    fn to_safetensors(
        &self,
        images: &[PathBuf],
        gray_window: Option<GrayWindow>,
    ) -> Result<Vec<u8>, CliError> {
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let n_images = images.len();
        let n_texts = self.text_embeds.len() / self.embed_dim.max(1);
        let tensors = [
            (
                "image_tokens",
                vec![n_images, self.tokens_per_image, self.embed_dim],
                bytes(&self.image_tokens),
            ),
            (
                "image_embeds",
                vec![n_images, self.embed_dim],
                bytes(&self.image_embeds),
            ),
            (
                "text_embeds",
                vec![n_texts, self.embed_dim],
                bytes(&self.text_embeds),
            ),
        ];
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .filter(|(_, shape, _)| shape[0] > 0)
            .map(|(name, shape, data)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), data)
                    .expect("shapes match the data by construction");
                (*name, view)
            })
            .collect();
        let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
        let mut metadata = HashMap::from([(
            "images".to_string(),
            serde_json::to_string(&names).expect("strings serialise"),
        )]);
        if let Some(window) = gray_window {
            metadata.insert(
                "gray_window".to_string(),
                serde_json::to_string(&window).expect("a window serialises"),
            );
        }
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| CliError::Input(format!("cannot serialise the output: {e}")))
    }
}

/// The encoding on a backend.
struct EncodeJob<'a> {
    weights: ClipWeights<Vec<f32>>,
    /// The text tower's tokenizer (CLIP's, or the model directory's `vocab.txt`).
    tokenizer: TextTokenizer,
    images: &'a [PathBuf],
    texts: &'a [String],
    /// The window 16-bit grayscale PNGs are read through, if any.
    gray_window: Option<GrayWindow>,
    batch: usize,
    quiet: bool,
}

impl OnBackend for EncodeJob<'_> {
    type Output = Result<Encoded, CliError>;

    fn run<B: Backend + 'static>(self, backend: B) -> Self::Output {
        Ok(self.encode(backend)?)
    }
}

impl EncodeJob<'_> {
    fn encode<B: Backend>(self, backend: B) -> Result<Encoded, TrainError> {
        let clip = FrozenClip::with_tokenizer(backend, self.weights, self.tokenizer)?;
        let backend = clip.backend();
        let weights = clip.weights();
        let transform = clip.weights().config.eval_transform();
        // The evaluation transform draws nothing.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let bar = if self.quiet {
            ProgressBar::with_draw_target(
                Some(self.images.len() as u64),
                ProgressDrawTarget::hidden(),
            )
        } else {
            ProgressBar::new(self.images.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "images  [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let embed_dim = weights.config.embed_dim;
        let tokens_per_image = weights.config.vision.tokens();
        let mut image_tokens = Vec::with_capacity(self.images.len() * tokens_per_image * embed_dim);
        for chunk in self.images.chunks(self.batch) {
            let mut pixels = vec![0.0; chunk.len() * transform.output_len()];
            for (path, slot) in chunk
                .iter()
                .zip(pixels.chunks_exact_mut(transform.output_len()))
            {
                let image = match self.gray_window {
                    Some(window) => RgbImage::open_windowed(path, window)?,
                    None => RgbImage::open(path)?,
                };
                transform.apply_into(&image, &mut rng, slot)?;
            }
            let input = backend.upload_vec(pixels)?;
            let out = vision_forward(backend, &weights.vision, &input, chunk.len())?;
            image_tokens
                .extend(backend.download(&out.tokens, chunk.len() * tokens_per_image * embed_dim)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let image_embeds = image_tokens
            .chunks_exact(tokens_per_image * embed_dim)
            .flat_map(|image| image[..embed_dim].iter().copied())
            .collect();
        let text_embeds = if self.texts.is_empty() {
            Vec::new()
        } else {
            encode_texts(&clip, self.texts)?
        };
        Ok(Encoded {
            image_tokens,
            image_embeds,
            text_embeds,
            tokens_per_image,
            embed_dim,
        })
    }
}

/// Projected (not normalised) text embeddings, pooled as the text tower pools (CLIP's at the
/// end-of-text token, BiomedCLIP's at `[CLS]`): prompts without learned context. A text longer
/// than the context holds is refused, naming its line (the tokenizer would cut it without a
/// word).
fn encode_texts<B: Backend>(
    clip: &FrozenClip<B>,
    texts: &[String],
) -> Result<Vec<f32>, TrainError> {
    let backend = clip.backend();
    let text = &clip.weights().text;
    let room = text.context_length().saturating_sub(2);
    let mut tokens = Vec::with_capacity(texts.len());
    for (line, t) in texts.iter().enumerate() {
        let ids = clip.tokenizer().encode(t);
        if ids.len() > room {
            return Err(TrainError::Invalid(format!(
                "text on line {}: {} tokens, but the model's context holds {room} between its \
                 start and end tokens; shorten the line",
                line + 1,
                ids.len()
            )));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= text.vocab_size()) {
            return Err(TrainError::Invalid(format!(
                "text on line {}: token {id} is outside the model's vocabulary of {} (the weights were not trained with this tokenizer)",
                line + 1,
                text.vocab_size()
            )));
        }
        tokens.push(ids);
    }
    let special = clip.tokenizer().special_tokens();
    let prompts = PromptLearner::from_tokens(&tokens, 0, 1, text, special)?;
    let mut state = prompts.state(backend)?;
    prompts.forward(backend, text, &[], &mut state)?;
    Ok(backend.download(&state.raw_features, texts.len() * prompts.embed_dim())?)
}
