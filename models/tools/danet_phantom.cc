// danet-phantom: writes BraTS-like phantom cases made from the real Colin27 brain.
//
//   danet-phantom --out DIR --cases N [--seed S] [--first I] [--dims X,Y,Z] [--dicom]
//                 [--style randomized|classic] [--family training|shift] [--solid_cores F]
//                 [--solid_look classic|wide]
//
// --dicom also writes each case as one DICOM study of four MR series (one file per slice,
// int16, synthetic patient/study/series UIDs, ImagePositionPatient/Orientation, spacing,
// rescale) under DIR/<id>/dicom/<modality>/, SeriesDescription "AX FLAIR", "AX T1 POST GD",
// "AX T1", "AX T2" (the modality rule in docs/dicom.md recognises them).
//
// Case i of seed S is always the same case; held-out sets use other seeds. See
// models/data/phantom.h for what a phantom is (and is not).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "models/data/phantom.h"
#include "models/data/shift_phantom.h"
#ifdef DANET_WITH_DICOM
#include "models/dicom/dicom.h"
#endif

ABSL_FLAG(std::string, out, "", "Directory to write case folders to.");
ABSL_FLAG(std::string, family, "training",
          "training (the generators training uses; see --style) or shift (an independent family "
          "for the shift test, models/data/shift_phantom.h; seeds >= 900000).");
ABSL_FLAG(std::string, style, "randomized",
          "Training-family generator: randomized (appearance, anatomy and tumour type drawn per "
          "case) or classic (the first release's single appearance).");
ABSL_FLAG(double, solid_cores, 0.0,
          "Randomized style: the share (0..1) of tumours with a solid non-enhancing core (label 1 "
          "between white matter and edema in look, not dark necrosis). 0 keeps every case as "
          "before.");
ABSL_FLAG(std::string, solid_look, "classic",
          "With --solid_cores: classic, or wide (the cores' look per modality drawn from wider "
          "ranges: T2 down to near white matter, T1 and T1ce darker than edema; "
          "models/data/randomized_phantom.cc).");
ABSL_FLAG(int, cases, 1, "Number of cases.");
ABSL_FLAG(uint64_t, seed, 1, "Series seed.");
ABSL_FLAG(int, first, 0, "Index of the first case.");
ABSL_FLAG(std::string, template_path, danet::data::kColin27Path, "Colin27 ch2bet.nii.gz.");
ABSL_FLAG(bool, dicom, false, "Also write each case as a DICOM study (four MR series).");
ABSL_FLAG(std::vector<std::string>, dims, std::vector<std::string>({"240", "240", "155"}),
          "Grid size i,j,k (BraTS: 240,240,155; tests use fewer slices).");

namespace {

#ifdef DANET_WITH_DICOM
// The case as one study: four series sharing a frame of reference.
absl::Status WriteDicomStudy(const danet::data::PhantomCase& phantom, const std::string& out) {
  const char* descriptions[] = {"AX FLAIR", "AX T1 POST GD", "AX T1", "AX T2"};
  danet::volume::DicomWriteOptions options;
  options.patient_name = "PHANTOM^" + phantom.case_id;
  options.patient_id = phantom.case_id;
  options.study_uid = danet::volume::NewDicomUid();
  options.frame_of_reference_uid = danet::volume::NewDicomUid();
  for (int m = 0; m < danet::volume::kNumModalities; ++m) {
    options.series_uid = "";
    options.series_description = descriptions[m];
    options.series_number = m + 1;
    const std::filesystem::path dir =
        std::filesystem::path(out) / phantom.case_id / "dicom" / danet::volume::kModalities[m];
    absl::StatusOr<std::vector<std::string>> written = danet::volume::WriteDicomSeries(
        {phantom.image.geometry, phantom.image.channels[m]}, options, dir, "IM");
    if (!written.ok()) return written.status();
  }
  return absl::OkStatus();
}
#endif  // DANET_WITH_DICOM

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("danet-phantom --out DIR --cases N [--seed S] [--first I]");
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  const int cases = absl::GetFlag(FLAGS_cases);
  if (out.empty() || cases < 1) {
    std::cerr << "danet-phantom: --out DIR and --cases N >= 1 are required\n";
    return 2;
  }
#ifndef DANET_WITH_DICOM
  if (absl::GetFlag(FLAGS_dicom)) {
    std::cerr << "danet-phantom: --dicom: this build has no DICOM (DANET_ENGINE_ONLY)\n";
    return 2;
  }
#endif
  danet::data::PhantomOptions options;
  absl::StatusOr<danet::data::PhantomStyle> style =
      danet::data::ParsePhantomStyle(absl::GetFlag(FLAGS_style));
  if (!style.ok()) {
    std::cerr << "danet-phantom: --style: " << style.status().message() << "\n";
    return 2;
  }
  options.style = *style;
  options.solid_core_fraction = absl::GetFlag(FLAGS_solid_cores);
  if (!(options.solid_core_fraction >= 0 && options.solid_core_fraction <= 1)) {
    std::cerr << "danet-phantom: --solid_cores is a share in 0..1\n";
    return 2;
  }
  if (options.solid_core_fraction > 0 && (options.style != danet::data::PhantomStyle::kRandomized ||
                                          absl::GetFlag(FLAGS_family) != "training")) {
    std::cerr << "danet-phantom: --solid_cores needs --family training --style randomized\n";
    return 2;
  }
  const std::string solid_look = absl::GetFlag(FLAGS_solid_look);
  if (solid_look != "classic" && (solid_look != "wide" || options.solid_core_fraction == 0)) {
    std::cerr << "danet-phantom: --solid_look is classic or wide (wide needs --solid_cores)\n";
    return 2;
  }
  if (solid_look == "wide") options.solid_look = danet::data::PhantomOptions::SolidLook::kWide;
  const std::vector<std::string> dims = absl::GetFlag(FLAGS_dims);
  for (size_t a = 0; a < 3; ++a) {
    if (dims.size() != 3 || !absl::SimpleAtoi(dims[a], &options.dims[a]) || options.dims[a] < 16 ||
        options.dims[a] > 512) {
      std::cerr << "danet-phantom: --dims is three sizes in 16..512, e.g. 240,240,155\n";
      return 2;
    }
  }
  // One generator function for either family.
  std::function<absl::StatusOr<danet::data::PhantomCase>(uint64_t, int)> generate;
  const std::string family = absl::GetFlag(FLAGS_family);
  if (family == "shift") {
    danet::data::ShiftPhantomOptions shift_options;
    shift_options.dims = options.dims;
    absl::StatusOr<danet::data::ShiftPhantomGenerator> shift =
        danet::data::ShiftPhantomGenerator::Create(absl::GetFlag(FLAGS_template_path),
                                                   shift_options);
    if (!shift.ok()) {
      std::cerr << "danet-phantom: " << shift.status().message() << "\n";
      return 1;
    }
    generate = [g = *std::move(shift)](uint64_t seed, int index) {
      return g.Generate(seed, index);
    };
  } else if (family == "training") {
    absl::StatusOr<danet::data::PhantomGenerator> training =
        danet::data::PhantomGenerator::Create(absl::GetFlag(FLAGS_template_path), options);
    if (!training.ok()) {
      std::cerr << "danet-phantom: " << training.status().message() << "\n";
      return 1;
    }
    generate = [g = *std::move(training)](uint64_t seed,
                                          int index) -> absl::StatusOr<danet::data::PhantomCase> {
      return g.Generate(seed, index);
    };
  } else {
    std::cerr << "danet-phantom: --family: '" << family << "': choose training or shift\n";
    return 2;
  }
  std::cout << absl::StrFormat("%-22s %8s %15s %8s\n", "case", "tumours", "tumour slices",
                               "seconds");
  for (int i = 0; i < cases; ++i) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<danet::data::PhantomCase> generated =
        generate(absl::GetFlag(FLAGS_seed), absl::GetFlag(FLAGS_first) + i);
    if (!generated.ok()) {
      std::cerr << "danet-phantom: " << generated.status().message() << "\n";
      return 2;
    }
    const danet::data::PhantomCase& phantom = *generated;
    absl::Status s = danet::data::WritePhantomCase(phantom, out);
#ifdef DANET_WITH_DICOM
    if (s.ok() && absl::GetFlag(FLAGS_dicom)) s = WriteDicomStudy(phantom, out);
#endif
    if (!s.ok()) {
      std::cerr << "danet-phantom: " << s << "\n";
      return 1;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << absl::StrFormat("%-22s %8d %9d / %3d %8.1f\n", phantom.case_id, phantom.tumours,
                                 phantom.tumour_slices, phantom.seg.geometry.dims[2], seconds);
  }
  return 0;
}
