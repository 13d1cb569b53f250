// A long-lived veraPDF validator: reads one PDF path per line on stdin, answers one line per path
// on stdout ("PASS", "FAIL\t<clause-test: message (n checks)>\t...", or "ERROR\t<message>").
// One JVM start then serves a whole batch, and `digitize run` boots it while pages are processed:
// JVM start-up, not validation, is most of veraPDF's cost on a one-page scan.
// Built by scripts/setup.sh against the veraPDF jars from Maven Central (GPLv3/MPL).

import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

import org.verapdf.gf.foundry.VeraGreenfieldFoundryProvider;
import org.verapdf.pdfa.Foundries;
import org.verapdf.pdfa.PDFAParser;
import org.verapdf.pdfa.PDFAValidator;
import org.verapdf.pdfa.flavours.PDFAFlavour;
import org.verapdf.pdfa.results.TestAssertion;
import org.verapdf.pdfa.results.ValidationResult;

public final class DigitizeValidator {
    private DigitizeValidator() {
    }

    public static void main(String[] args) throws Exception {
        VeraGreenfieldFoundryProvider.initialise();
        PDFAFlavour flavour = PDFAFlavour.fromString(args.length > 0 ? args[0] : "2b");
        warmUp(flavour);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        out.println("READY");
        String path;
        while ((path = in.readLine()) != null) {
            if (path.isEmpty()) {
                continue;
            }
            out.println(validate(path, flavour));
        }
    }

    /** Validate a tiny PDF before saying READY: loads the profile and classes while the caller works. */
    private static void warmUp(PDFAFlavour flavour) {
        String[] objects = {
            "<</Type/Catalog/Pages 2 0 R>>",
            "<</Type/Pages/Kids[3 0 R]/Count 1>>",
            "<</Type/Page/Parent 2 0 R/MediaBox[0 0 10 10]/Resources<<>>>>",
        };
        StringBuilder pdf = new StringBuilder("%PDF-1.7\n");
        StringBuilder xref = new StringBuilder("xref\n0 4\n0000000000 65535 f \n");
        for (int i = 0; i < objects.length; i++) {
            xref.append(String.format("%010d 00000 n \n", pdf.length()));
            pdf.append(i + 1).append(" 0 obj").append(objects[i]).append("endobj\n");
        }
        int start = pdf.length();
        pdf.append(xref).append("trailer<</Size 4/Root 1 0 R>>\nstartxref\n").append(start).append("\n%%EOF\n");
        check(new ByteArrayInputStream(pdf.toString().getBytes(StandardCharsets.US_ASCII)), flavour);
    }

    private static String validate(String path, PDFAFlavour flavour) {
        try (InputStream stream = new FileInputStream(path)) {
            return check(stream, flavour);
        } catch (Exception e) {
            return "ERROR\t" + oneLine(e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    private static String check(InputStream stream, PDFAFlavour flavour) {
        try (PDFAParser parser = Foundries.defaultInstance().createParser(stream, flavour);
             PDFAValidator validator = Foundries.defaultInstance().createValidator(flavour, false)) {
            ValidationResult result = validator.validate(parser);
            if (result.isCompliant()) {
                return "PASS";
            }
            Map<String, Integer> counts = new LinkedHashMap<>();
            Map<String, String> messages = new LinkedHashMap<>();
            for (TestAssertion assertion : result.getTestAssertions()) {
                if (assertion.getStatus() != TestAssertion.Status.FAILED) {
                    continue;
                }
                String rule = assertion.getRuleId().getClause() + "-" + assertion.getRuleId().getTestNumber();
                counts.merge(rule, 1, Integer::sum);
                messages.putIfAbsent(rule, oneLine(assertion.getMessage()));
            }
            StringBuilder line = new StringBuilder("FAIL");
            for (Map.Entry<String, Integer> entry : counts.entrySet()) {
                line.append('\t').append(entry.getKey()).append(": ").append(messages.get(entry.getKey()))
                    .append(" (").append(entry.getValue()).append(" checks)");
            }
            return line.toString();
        } catch (Exception | StackOverflowError e) {
            return "ERROR\t" + oneLine(e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    private static String oneLine(String text) {
        return text == null ? "" : text.replaceAll("\\s+", " ").trim();
    }
}
