using System.CommandLine;
using System.Globalization;
using System.Text;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama tokenize [--model DIR] (--text T | --file F) [--json] [--no-bos] [--special]</c>: the
/// token ids of a text and each token's string, with the model's own tokenizer (no weights are
/// loaded; without --model and the default directories, the demo's). The count on stderr is of
/// Unicode characters (scalar values), not UTF-16 code units. Text output is one token per line, id then the token quoted with whitespace, control
/// characters and partial UTF-8 bytes escaped; --json writes <c>{"ids": [...], "tokens": [...]}</c>
/// with tokens as Hugging Face writes them (transformers' convert_ids_to_tokens), so both can be
/// compared with the reference directly.
/// </summary>
public static class TokenizeCommand
{
    /// <summary>The JSON shape of <c>tokenize --json</c>.</summary>
    public sealed record TokenizeJson(IReadOnlyList<int> Ids, IReadOnlyList<string> Tokens);

    // Strict: a file that is not UTF-8 is an error, not text with U+FFFD in it.
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    /// <summary>Builds the command; <paramref name="input"/> is read for <c>--file -</c>.</summary>
    public static Command Create(Func<TextReader> input)
    {
        var model = ModelOption();
        var text = new Option<string?>("--text") { Description = "Text to tokenize" };
        var file = new Option<string?>("--file") { Description = "UTF-8 file to tokenize; - reads standard input", HelpName = "FILE|-" };
        var noBos = new Option<bool>("--no-bos") { Description = "Do not put <|begin_of_text|> first" };
        var special = new Option<bool>("--special") { Description = "Turn special-token names in the text (<|eot_id|>, ...) into their ids; by default they are ordinary text" };
        var json = CliOptions.Json();
        var command = new Command("tokenize", "Token ids and token strings of a text, with the model's tokenizer") { model, text, file, noBos, special, json };
        command.Validators.Add(r =>
        {
            bool hasText = r.GetResult(text) is not null, hasFile = r.GetResult(file) is not null;
            if (hasText == hasFile)
                r.AddError("give the text either as --text TEXT or as --file FILE (- for standard input), exactly one of them");
        });
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            string content = parse.GetValue(text) ?? ReadFile(parse.GetValue(file)!, input);
            var tokenizer = LoadTokenizer(parse.GetValue(model), io);
            var ids = tokenizer.Encode(content, addBos: !parse.GetValue(noBos), parseSpecial: parse.GetValue(special));
            if (parse.GetValue(json))
            {
                io.WriteJson(new TokenizeJson(ids, ids.Select(tokenizer.TokenString).ToList()));
            }
            else
            {
                int width = ids.Count == 0 ? 1 : ids.Max().ToString(CultureInfo.InvariantCulture).Length;
                foreach (int id in ids)
                    io.Out.WriteLine($"{id.ToString(CultureInfo.InvariantCulture).PadLeft(width)}  {Visible(tokenizer, id)}");
                io.Out.Flush();
            }
            io.Err.WriteLine($"{ids.Count} tokens, {content.EnumerateRunes().Count()} characters");
            return 0;
        });
        return command;
    }

    /// <summary>The optional --model option of tokenize and detokenize.</summary>
    internal static Option<string?> ModelOption() => new("--model")
    {
        Description = $"Model directory with tokenizer files, .gguf file or ollama:NAME[:TAG] (default: {string.Join(", then ", ModelOptions.ChatModelDirs)})",
        HelpName = "DIR|GGUF",
    };

    /// <summary>The tokenizer of --model, else of the default directories, else of the built-in demo (with one line saying so), as generate falls back.</summary>
    internal static LlamaTokenizer LoadTokenizer(string? model, CommandIO io) =>
        ModelOptions.LoadTokenizer(ModelOptions.ResolveModelDir(model, io, allowDemo: true, ModelOptions.ChatModelDirs, out _,
            "its tokenizer is a byte-level BPE of 256 merges trained on one English paragraph with Llama 3's special tokens, not Llama 3's vocabulary"));

    /// <summary>
    /// One token for a reader: a special token by name, marked; otherwise its text in double quotes
    /// with \n, \t, \r, \\, \" escaped, other control, format and non-space whitespace characters as
    /// \u{...}, and bytes that do not form a whole UTF-8 character inside this token as \xNN.
    /// </summary>
    public static string Visible(LlamaTokenizer tokenizer, int id)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        byte[] bytes = tokenizer.TokenBytes(id);
        if (tokenizer.IsSpecial(id))
            return $"{Encoding.UTF8.GetString(bytes)}  (special)";
        var text = new StringBuilder("\"");
        ReadOnlySpan<byte> rest = bytes;
        while (!rest.IsEmpty)
        {
            if (Rune.DecodeFromUtf8(rest, out Rune rune, out int consumed) != System.Buffers.OperationStatus.Done)
            {
                text.Append(CultureInfo.InvariantCulture, $"\\x{rest[0]:X2}");
                rest = rest[1..];
                continue;
            }
            text.Append(rune.Value switch
            {
                '\n' => "\\n",
                '\t' => "\\t",
                '\r' => "\\r",
                '\\' => "\\\\",
                '"' => "\\\"",
                ' ' => " ",
                _ when Rune.IsControl(rune) || Rune.IsWhiteSpace(rune) || Rune.GetUnicodeCategory(rune) == UnicodeCategory.Format
                    => $"\\u{{{rune.Value:X4}}}",
                _ => rune.ToString(),
            });
            rest = rest[consumed..];
        }
        return text.Append('"').ToString();
    }

    /// <summary>The text of a UTF-8 file (BOM dropped, invalid UTF-8 an error), or of <paramref name="input"/> for "-".</summary>
    internal static string ReadFile(string path, Func<TextReader> input)
    {
        if (path == "-")
            return input().ReadToEnd();
        if (Directory.Exists(path))
            throw new ArgumentException($"--file '{path}' is a directory; pass a text file, or - for standard input");
        if (!File.Exists(path))
            throw new FileNotFoundException($"--file '{path}' does not exist; pass a text file, or - for standard input");
        byte[] bytes = IlgpuLlama.IO.InputFile.ReadAllBytes(path);
        // A byte-order mark says how the file is encoded; it is not part of the text.
        ReadOnlySpan<byte> body = bytes.AsSpan().StartsWith(Utf8Bom) ? bytes.AsSpan(Utf8Bom.Length) : bytes;
        try
        {
            return StrictUtf8.GetString(body);
        }
        catch (DecoderFallbackException e)
        {
            string where = e.Index >= 0 ? $" at byte {e.Index + bytes.Length - body.Length}" : "";
            throw new ArgumentException($"--file '{path}' is not valid UTF-8{where}; convert it first (e.g. iconv -t UTF-8)");
        }
    }
}
