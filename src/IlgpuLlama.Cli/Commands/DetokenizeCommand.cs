using System.CommandLine;
using System.Globalization;
using IlgpuLlama.Cli.Infrastructure;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama detokenize [--model DIR] --ids 1,2,3 [--special] [--json]</c>: the text of token ids on
/// stdout, exactly as decoded (no newline added, so tokenize and detokenize round-trip); special
/// tokens only with --special, as generate prints them. --json writes <c>{"ids": [...], "text": "..."}</c>.
/// </summary>
public static class DetokenizeCommand
{
    /// <summary>The JSON shape of <c>detokenize --json</c>.</summary>
    public sealed record DetokenizeJson(IReadOnlyList<int> Ids, string Text);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = TokenizeCommand.ModelOption();
        var ids = new Option<string>("--ids") { Description = "Token ids separated by commas or spaces, e.g. 128000,9906,4435", Required = true };
        var special = new Option<bool>("--special") { Description = "Write special tokens by name; by default they produce no text" };
        var json = CliOptions.Json();
        var command = new Command("detokenize", "The text of token ids, with the model's tokenizer") { model, ids, special, json };
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            int[] parsed = ParseIds(parse.GetValue(ids)!);
            var tokenizer = TokenizeCommand.LoadTokenizer(parse.GetValue(model), io);
            foreach (int id in parsed)
            {
                if (!tokenizer.HasId(id))
                    throw new ArgumentException($"--ids: {id} is not a token of this tokenizer (ids 0..{tokenizer.VocabSize - 1}, {tokenizer.RankCount} ranks then special tokens)");
            }
            string text = tokenizer.Decode(parsed, parse.GetValue(special));
            if (parse.GetValue(json))
            {
                io.WriteJson(new DetokenizeJson(parsed, text));
                return 0;
            }
            io.Out.Write(text);
            io.Out.Flush();
            return 0;
        });
        return command;
    }

    /// <summary>Parses "1,2,3", "1 2 3" or "[1, 2, 3]" (as tokenize --json writes them).</summary>
    public static int[] ParseIds(string text)
    {
        string[] parts = text.Trim().TrimStart('[').TrimEnd(']').Split([',', ' ', '\t', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0)
            throw new ArgumentException("--ids is empty; pass token ids such as --ids 128000,9906,4435");
        var result = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out result[i]))
                throw new ArgumentException($"--ids: '{parts[i]}' is not a token id; pass numbers separated by commas, e.g. --ids 128000,9906,4435");
        }
        return result;
    }
}
