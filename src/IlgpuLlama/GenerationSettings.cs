using IlgpuLlama.Constraints;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;

namespace IlgpuLlama;

/// <summary>
/// How one generation continues its prompt. The defaults are the command line's: 64 new tokens,
/// temperature 0.6 with top-k 50 and top-p 0.9 (Meta's settings for Llama 3 Instruct), a fresh
/// random seed, stopping at the model's end-of-sequence tokens.
/// </summary>
public sealed record GenerationSettings
{
    /// <summary>New tokens at most.</summary>
    public int MaxNewTokens { get; init; } = GenerationDefaults.MaxNewTokens;

    /// <summary>How the next token is chosen (<see cref="SamplingOptions.Greedy"/> for the argmax).</summary>
    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>Texts that end the generation; the text stops before the first one.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Token ids that end the generation, besides the model's end-of-sequence tokens.</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];

    /// <summary>Do not stop at the model's end-of-sequence tokens (benchmarks).</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Write special tokens by name in the text; by default they produce no text.</summary>
    public bool IncludeSpecial { get; init; }

    /// <summary>Which random stream of the seed to draw from (give each of several requests with one seed its own).</summary>
    public int SamplingStream { get; init; }

    /// <summary>
    /// Log-probabilities to return with each generated token: null for none; 0 for the chosen token's
    /// alone; k (at most <see cref="TokenLogprobs.MaxTop"/>) for it and the k most likely tokens. They are
    /// the log-softmax, in float64, of the fp32 logits the sampler starts from: before temperature,
    /// top-k, top-p and min-p (after the repetition penalty, when one is set), as OpenAI's API returns them;
    /// with a <see cref="ResponseFormat"/> they are those of the unmasked logits.
    /// </summary>
    public int? Logprobs { get; init; }

    /// <summary>
    /// Log-probabilities of the prompt's own tokens (OpenAI's completions <c>echo</c> with <c>logprobs</c>):
    /// null for none; k (0 to <see cref="TokenLogprobs.MaxTop"/>) for each prompt token after the first,
    /// its log-probability given the tokens before it and the k most likely tokens at its position
    /// (the same float64 log-softmax as <see cref="Logprobs"/>, without any repetition penalty). The
    /// prefill then runs the LM head over every prompt position and the request takes no cached prefix
    /// (prefix reuse is skipped for it). See <see cref="RequestResult.PromptLogprobs"/>.
    /// </summary>
    public int? PromptLogprobs { get; init; }

    /// <summary>
    /// Structured output: the text must be a JSON text of this grammar (<see cref="JsonGrammar.FromSchema(string)"/>
    /// or <see cref="JsonGrammar.AnyObject"/>). Each step masks the tokens that cannot continue it, or
    /// could not complete it within the tokens left, before the repetition penalty, temperature and the
    /// filters, so the text parses even when <see cref="MaxNewTokens"/> ends it. Needs the tokenizer and
    /// the end-of-sequence tokens (not <see cref="IgnoreEos"/>), and at least
    /// <see cref="JsonGrammar.MinBytes"/> new tokens. Stop strings still cut the text. Null: free text.
    /// </summary>
    public JsonGrammar? ResponseFormat { get; init; }

    /// <summary>
    /// Added to the logits of these token ids before every choice (OpenAI's <c>logit_bias</c>: -100 to
    /// 100; -100 all but bans a token, 100 all but forces it), after the repetition penalty and before
    /// temperature, the filters and a <see cref="ResponseFormat"/>'s mask (which still decides what may
    /// come). The request's rows then come to the host to be chosen there. <see cref="Logprobs"/> stay
    /// those of the model, without the bias. Null or empty: none.
    /// </summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>The largest |bias| <see cref="LogitBias"/> takes.</summary>
    public const float MaxLogitBias = 100f;
}
